"""A REAL ComfyUI 0.3.75 for the comfyui-marked tests, run by infra/comfyui/comfyctl.

Two servers (``TOWER_COMFY_PORT`` and the next port, default 8188/8189) with the test nodes of
``custom_nodes/``; only the second has the ``tower-test.bin`` "model". A server already answering
on a port is reused (it must have the test nodes); servers this session started are stopped at
its end. ``comfyctl setup`` (first run: a few minutes, ~6 GB) happens inside ``start``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from director.planner import plan_scene
from director.refiner import refine
from events.models import PromptRefined, SceneRequested, ShotPlanned

REPO = Path(__file__).resolve().parents[2]
COMFYCTL = REPO / "infra" / "comfyui" / "comfyctl"
TEST_NODES = Path(__file__).with_name("custom_nodes")
BASE_PORT = int(os.environ.get("TOWER_COMFY_PORT", "8188"))
DATA_ROOT = Path(os.environ.get("TOWER_COMFY_DATA", REPO / ".tower" / "comfyui"))
MODEL = "tower-test.bin"


def _env(port: int) -> dict[str, str]:
    return {**os.environ, "TOWER_COMFY_PORT": str(port), "TOWER_COMFY_CUSTOM_NODES": str(TEST_NODES)}


def url_of(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def _get(port: int, path: str) -> dict | None:
    try:
        with urllib.request.urlopen(url_of(port) + path, timeout=3) as response:
            return json.load(response)
    except OSError:
        return None


def start(ports: list[int]) -> None:
    """Start servers in parallel; fail the session with the server log if one does not come up."""
    procs = {port: subprocess.Popen([str(COMFYCTL), "start"], env=_env(port), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True) for port in ports}
    for port, proc in procs.items():
        out, _ = proc.communicate(timeout=900)
        if proc.returncode != 0:
            pytest.fail(f"comfyctl start on port {port} failed:\n{out[-3000:]}")


def stop(port: int) -> None:
    subprocess.run([str(COMFYCTL), "stop"], env=_env(port), capture_output=True, timeout=60)


def kill(port: int) -> None:
    """SIGKILL a server this session started: a crash, not a shutdown."""
    pid = int((DATA_ROOT / str(port) / "comfyui.pid").read_text())
    os.killpg(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def comfy_urls() -> Iterator[list[str]]:
    ports = [BASE_PORT, BASE_PORT + 1]
    models = DATA_ROOT / str(ports[1]) / "models" / "tower_models"
    models.mkdir(parents=True, exist_ok=True)
    (models / MODEL).write_bytes(b"not really a model")
    started = [port for port in ports if _get(port, "/system_stats") is None]
    start(started)
    for port in ports:
        if not _get(port, "/object_info/TowerSlowProgress"):
            pytest.fail(f"the ComfyUI on port {port} lacks the test nodes; stop it or set TOWER_COMFY_PORT")
    yield [url_of(port) for port in ports]
    for port in started:
        stop(port)


@pytest.fixture
def victim_port() -> Iterator[int]:
    """A third server, started for one test and stopped (or already killed) after it."""
    port = BASE_PORT + 2
    start([port])
    yield port
    stop(port)


@pytest.fixture
def refined() -> PromptRefined:
    """One refined attempt of the Kai scene (64x48, the planner's frame count)."""
    request = SceneRequested(scene_id="scene-kai", session_id="s1", description="Kai fights the dragon", characters=["Kai", "Dragon"])
    plan = plan_scene(request, fps=4)
    planned = ShotPlanned(
        scene_id=request.scene_id, session_id=request.session_id, attempt=1, max_attempts=3, quality_threshold=0.6,
        shot=plan.shots[0], overall_mood=plan.overall_mood, lighting_suggestions=plan.lighting_suggestions,
    )
    return refine(planned, {}, width=64, height=48, workflow="x", learner_version="1")
