"""A REAL ComfyUI 0.3.75 for the comfyui-marked tests, run by infra/comfyui/comfyctl.

Two servers (``TOWER_COMFY_PORT`` and the next port, default 8188/8189) with the test nodes of
``custom_nodes/``; only the second has the ``tower-test.bin`` "model". A server already answering
on a port is reused (it must have the test nodes); servers this session started are stopped at
its end. ``comfyctl setup`` (first run: a few minutes, ~6 GB) happens inside ``start``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from director.planner import plan_scene
from director.refiner import refine
from events.models import PromptRefined, SceneRequested, ShotPlanned
from tests.comfyui.servers import BASE_PORT, DATA_ROOT, MODEL, get_json, start, stop, url_of


@pytest.fixture(scope="session")
def comfy_urls() -> Iterator[list[str]]:
    ports = [BASE_PORT, BASE_PORT + 1]
    models = DATA_ROOT / str(ports[1]) / "models" / "tower_models"
    models.mkdir(parents=True, exist_ok=True)
    (models / MODEL).write_bytes(b"not really a model")
    started = [port for port in ports if get_json(port, "/system_stats") is None]
    start(started)
    for port in ports:
        if not get_json(port, "/object_info/TowerSlowProgress"):
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
