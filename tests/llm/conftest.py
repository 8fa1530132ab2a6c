"""A real OpenAI-compatible server for the LLM planner: llama-cpp-python's, built once by
``make llama`` into its own environment, serving the test's own tiny model (tests/llm/model.py)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.llm.model import write_constant_model
from tower.testing import free_port

CACHE_DIR = Path(os.environ.get("TOWER_CACHE_DIR", Path.home() / ".cache" / "tower"))
LLAMA_PYTHON = Path(os.environ.get("TOWER_LLAMA_PYTHON", CACHE_DIR / "llama-venv" / "bin" / "python"))
START_TIMEOUT_S = 60


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "llama_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.llm)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API base URL (``.../v1``) of a running llama-cpp-python server."""
    if not LLAMA_PYTHON.exists():
        pytest.skip(f"{LLAMA_PYTHON} is missing: `make llama` builds llama-cpp-python's server (make test does)")
    folder = tmp_path_factory.mktemp("llama")
    model = write_constant_model(folder / "constant.gguf")
    port = free_port()
    log = (folder / "server.log").open("wb")
    server = subprocess.Popen(
        [str(LLAMA_PYTHON), "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "tower-test",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"llama-cpp-python's server exited with {server.returncode}: "
                            f"{(folder / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                pytest.fail(f"llama-cpp-python's server did not answer within {START_TIMEOUT_S} s: "
                            f"{(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
