"""Fixtures for the DirectorPanel browser tests: the built panel (``make panel``), Debian's
``chromium`` driven by Playwright (no browser download), and a page on the real stack: ``tower
api`` serving the panel, the seven agents, real Kafka and PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
PANEL = REPO / "panel"
# Screenshots go to a temporary folder; `make screenshots` points this at docs/ to refresh the
# README's pictures (tests do not write into tracked files otherwise).
SCREENSHOTS = Path(os.environ["TOWER_SCREENSHOT_DIR"]) if os.environ.get("TOWER_SCREENSHOT_DIR") else None
CHROMIUM = Path(os.environ.get("TOWER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
AXE = PANEL / "node_modules" / "axe-core" / "axe.min.js"


def _install_chromium() -> str | None:
    """Install Debian's chromium when missing (as root, like `make panel`); why not, if it cannot."""
    if CHROMIUM.exists():
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"{CHROMIUM} is missing and this is not root with apt-get: install Debian's chromium (make panel)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "chromium"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            return f"apt-get install chromium failed: {result.stderr[-500:]}"
    return None if CHROMIUM.exists() else f"{CHROMIUM} still missing after apt-get install chromium"


def _panel_stale() -> bool:
    built = PANEL / "dist" / "index.html"
    if not built.exists() or not AXE.exists():
        return True
    sources = [PANEL / "index.html", PANEL / "vite.config.js", PANEL / "package-lock.json", *PANEL.glob("src/**/*")]
    return any(p.is_file() and p.stat().st_mtime > built.stat().st_mtime for p in sources)


@pytest.fixture(scope="session")
def panel_built() -> Path:
    """panel/dist, built by `make panel` when missing or older than its sources."""
    if _panel_stale():
        result = subprocess.run(["make", "-s", "panel"], cwd=REPO, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"`make panel` failed (needs node and npm):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return PANEL / "dist"


@pytest.fixture(scope="session")
async def browser(panel_built: Path) -> AsyncIterator:
    """Headless Debian chromium under Playwright (executable_path: Playwright downloads nothing)."""
    why_not = _install_chromium()
    if why_not:
        pytest.skip(why_not)
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


class PageErrors(list):
    """Uncaught exceptions, console errors and failed requests of a page, to assert there are none.
    None at all: a read of a scene or session the learner has not projected yet waits on the
    server (``?wait=``) rather than answering 404, which the browser would log as a console error."""

    def attach(self, page) -> None:  # noqa: ANN001
        page.on("pageerror", lambda exc: self.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: msg.type == "error" and self.append(f"console: {msg.text}"))
        page.on("response", self._response)

    def _response(self, response) -> None:  # noqa: ANN001
        if response.status >= 400:
            self.append(f"{response.request.method} {urlsplit(response.url).path}: {response.status}")


@pytest.fixture
async def new_page(browser):  # noqa: ANN001, ANN201
    """``await new_page(width, height)``: a fresh context and page; closed after the test."""
    contexts = []

    async def make(width: int, height: int, **options):  # noqa: ANN003, ANN202
        context = await browser.new_context(viewport={"width": width, "height": height}, **options)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = await context.new_page()
        page.errors = PageErrors()
        page.errors.attach(page)
        await page.add_init_script(path=str(Path(__file__).with_name("observe.js")))
        return page

    yield make
    for context in contexts:
        await context.close()
