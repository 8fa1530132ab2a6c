"""A real ComfyUI 0.3.75 with a checkpoint of the real SD1.5 architecture, for the ``models`` tests.

The checkpoint (tests/models/sd15.py: the original format's tensor names and shapes, noise for
weights) is written once into ``$TOWER_CACHE_DIR/test-models`` (about 2.1 GB, ~25 s) and linked
into the server's ``models/checkpoints``. The server runs on ``TOWER_COMFY_PORT + 3`` (the
comfyui tests use the three ports before it); one already answering there is reused.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from director.planner import plan_scene
from director.refiner import refine
from events.models import PromptRefined, SceneRequested, ShotPlanned
from tests.comfyui.servers import BASE_PORT, DATA_ROOT, get_json, start, stop, url_of
from tests.models import sd15

PORT = BASE_PORT + 3
CHECKPOINT = "tower-sd15-noise.safetensors"
MODEL_NAMES = {"sd15-checkpoint": CHECKPOINT}
CACHE = Path(os.environ.get("TOWER_CACHE_DIR", Path.home() / ".cache" / "tower")) / "test-models"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(item.fspath).is_relative_to(here):
            item.add_marker(pytest.mark.models)
            item.add_marker(pytest.mark.comfyui)


@pytest.fixture(scope="session")
def sd15_checkpoint() -> Path:
    """The generated SD1.5 checkpoint; concurrent sessions write it once (a lock, then a rename)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{sd15.GENERATOR_VERSION}.safetensors"
    with (CACHE / f"{sd15.GENERATOR_VERSION}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():
            sd15.write_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def models_dir(sd15_checkpoint: Path) -> Path:
    """The test server's ``models`` folder, holding the SD1.5 checkpoint (a link to the cache)."""
    models = DATA_ROOT / str(PORT) / "models"
    checkpoints = models / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    link = checkpoints / CHECKPOINT
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(sd15_checkpoint)
    return models


@pytest.fixture(scope="session")
def models_url(models_dir: Path) -> Iterator[str]:
    started = get_json(PORT, "/system_stats") is None
    if started:
        start([PORT])
    yield url_of(PORT)
    if started:
        stop(PORT)


@pytest.fixture
def references(tmp_path: Path) -> Path:
    """A reference picture of Kai (a warm gradient with a disc), as a user would keep one."""
    folder = tmp_path / "references"
    folder.mkdir()
    image = Image.new("RGB", (96, 96), (200, 120, 60))
    for y in range(96):
        for x in range(96):
            if (x - 48) ** 2 + (y - 40) ** 2 < 400:
                image.putpixel((x, y), (30, 60, 200))
    image.save(folder / "Kai.png")
    return folder


def attempt(shot_index: int = 0, *, size: int = 64, max_steps: int = 2) -> PromptRefined:
    """One refined attempt of the Kai scene at a small size and few steps (a CPU run)."""
    request = SceneRequested(scene_id="scene-models", session_id="s1", description="Kai fights the dragon",
                             characters=["Kai", "Dragon"])
    plan = plan_scene(request, fps=4)
    planned = ShotPlanned(
        scene_id=request.scene_id, session_id=request.session_id, attempt=1, max_attempts=1, quality_threshold=0.1,
        shot=plan.shots[shot_index], overall_mood=plan.overall_mood, lighting_suggestions=plan.lighting_suggestions,
    )
    return refine(planned, {}, width=size, height=size, workflow="models-test", learner_version="1",
                  max_steps=max_steps)
