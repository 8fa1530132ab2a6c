"""Real models through the real ComfyUI: a checkpoint of the SD1.5 architecture (made up here, no
download) loaded by ComfyUI 0.3.75's checkpoint loader, sampled, decoded, and animated by the
plan's camera; the presets it cannot run here (SDXL, video: too large to make up on CPU CI) pass
the server's own validation and fail typed when their files are missing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agents.registry import STAGE_NAMES
from comfy.client import ComfyClient
from comfy.errors import ExecutionFailed
from comfy.jobs import run_job
from comfy.pool import ComfyPool
from comfy.presets import PRESETS, preset
from comfy.workflow import WorkflowTemplate
from eventlog.follow import follow_scene, produce, scene_envelope
from events.models import SceneRequested
from render.camera import expected_shift
from render.comfyui import ComfyBackend
from render.errors import ModelFilesMissing, RenderError
from render.media import resolve
from scoring.config import ScorerConfig
from scoring.flow import dis_flow
from scoring.models import ShotInput
from scoring.scorer import Scorer
from tests.models.conftest import CHECKPOINT, MODEL_NAMES, attempt

REPO = Path(__file__).resolve().parents[2]


def backend(url: str, name: str, **kwargs) -> ComfyBackend:
    return ComfyBackend(ComfyPool.from_urls(url), render_preset=preset(name), model_names=MODEL_NAMES,
                        timeout_s=240, **kwargs)


def grey(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


async def test_anime_sd15_loads_the_checkpoint_and_its_keyframe_moves_with_the_planned_pan(models_url, tmp_path):
    event = attempt(0)  # the wide "slow pan"
    assert event.shot.camera_movement == "slow pan"
    renderer = backend(models_url, "anime-sd15")
    try:
        frames = await renderer.render(event, tmp_path)
    finally:
        await renderer.aclose()

    assert len(frames) == event.shot.frame_count
    assert (frames[0].width, frames[0].height) == (64, 64)
    folder = resolve(tmp_path, frames[0].uri).parent
    keyframe = np.asarray(Image.open(folder / "keyframe.png"))
    assert keyframe.shape == (80, 80, 3) and keyframe.std() > 1, "the sampler and VAE gave a flat picture"
    # The camera moved by the plan over the larger keyframe: the flow between frames is the pan's shift.
    dx, dy = expected_shift(event.shot.camera_movement, motion=event.prompt.camera_motion, fps=event.shot.fps,
                            width=64, height=64, frame_count=event.shot.frame_count, keyframe_size=(80, 80))
    flow = dis_flow(grey(resolve(tmp_path, frames[0].uri)), grey(resolve(tmp_path, frames[1].uri)))
    inner = flow[12:-12, 12:-12]
    assert abs(float(np.median(inner[..., 0])) - dx) < 0.35 and abs(float(np.median(inner[..., 1])) - dy) < 0.35
    assert dx != 0
    # And it is scored like any other render.
    with Scorer(ScorerConfig(device="cpu", workers=1)) as scorer:
        shot = ShotInput(frames=[resolve(tmp_path, f.uri) for f in frames], expected_motion=event.shot.expected_motion)
        [score] = await asyncio.to_thread(scorer.score_shots, [shot])
    assert score.status == "ok", score.reason
    assert score.metrics, "the animated keyframe was not measured"


async def test_anime_ref_starts_from_the_characters_reference(models_url, references, tmp_path):
    event = attempt(2)  # a close-up of Kai
    renderer = backend(models_url, "anime-ref", references_dir=references)
    try:
        frames = await renderer.render(event, tmp_path)
    finally:
        await renderer.aclose()
    assert len(frames) == event.shot.frame_count
    uploaded = list((Path(os.environ.get("TOWER_COMFY_DATA", REPO / ".tower" / "comfyui")) / models_url.rsplit(":", 1)[1]
                     / "input" / "tower").glob("ref-*.png"))
    assert uploaded, "the reference image was not uploaded to the server"

    without = backend(models_url, "anime-ref", references_dir=tmp_path / "none")
    try:
        with pytest.raises(RenderError, match="needs a reference image of one of Kai"):
            await without.render(event, tmp_path)
    finally:
        await without.aclose()


async def test_a_missing_checkpoint_fails_typed_before_anything_is_queued(models_url, tmp_path):
    client = ComfyClient(models_url)
    renderer = backend(models_url, "anime-sdxl")
    try:
        before = len(await client._json("GET", "/history"))
        with pytest.raises(ModelFilesMissing) as failure:
            await renderer.render(attempt(0), tmp_path)
        after = len(await client._json("GET", "/history"))
    finally:
        await renderer.aclose()
        await client.aclose()
    sdxl = preset("anime-sdxl").files(MODEL_NAMES)[0]
    assert failure.value.missing == {models_url: [sdxl]}
    assert f"models/checkpoints/{sdxl.name}" in str(failure.value) and sdxl.url in str(failure.value)
    assert after == before, "a job was queued for a preset whose model is missing"


@pytest.mark.parametrize("name", [n for n in PRESETS if n not in ("anime-sd15", "anime-ref")])
async def test_presets_too_large_to_run_here_pass_the_real_servers_validation(models_url, models_dir, name):
    """Stand-in files under the preset's file names get each graph past ComfyUI's validation (it
    checks every loader's choice against its folder listing); loading one then fails, as it must."""
    files = preset(name).files(MODEL_NAMES)
    stand_ins = [models_dir / f.folder / f.name for f in files]
    for path in stand_ins:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"a stand-in, not a model")
    graph = preset(name).graph(MODEL_NAMES)
    template = WorkflowTemplate.from_graph(name, graph)
    workflow = template.patch({"prompt": "Kai in the rain", "negative_prompt": "blurry", "seed": 7, "steps": 1,
                               "width": 64, "height": 64, "frame_count": 1})
    client = ComfyClient(models_url)
    try:
        with pytest.raises(ExecutionFailed) as failure:
            await run_job(client, workflow, deadline=time.monotonic() + 120)
    finally:
        await client.aclose()
        for path in stand_ins:
            path.unlink()
    # Accepted by validation, failed executing a loader: not a rejected graph.
    assert failure.value.node_type in {"CheckpointLoaderSimple", "UNETLoader", "CLIPLoader", "VAELoader"}, failure.value


def test_tower_models_says_what_runs_where(models_url, tmp_path):
    dead = "http://127.0.0.1:9"
    env = {**os.environ, "TOWER_COMFY_URLS": f"{models_url},{dead}", "TOWER_COMFY_MODELS": json.dumps(MODEL_NAMES),
           "TOWER_RENDER_PRESET": "anime-sd15", "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "tower", "models", "--json", "--timeout", "3"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, "a server that does not answer must give a non-zero exit"
    report = json.loads(run.stdout)
    live, gone = report["servers"]
    assert gone == {"url": dead, "answers": False, "error": gone["error"]} and gone["error"]
    assert live["presets"]["anime-sd15"] == {"ready": True, "missing": []} and report["preset_runnable"] is True
    sdxl = live["presets"]["anime-sdxl"]
    assert not sdxl["ready"] and sdxl["missing"][0]["folder"] == "checkpoints" and sdxl["missing"][0]["url"]

    alone = subprocess.run([sys.executable, "-m", "tower", "models"], env={**env, "TOWER_COMFY_URLS": models_url},
                           capture_output=True, text=True, timeout=60)
    assert alone.returncode == 0, alone.stderr
    assert "anime-sd15" in alone.stdout and "ready" in alone.stdout
    assert f"models/checkpoints/{preset('anime-sdxl').files()[0].name}" in alone.stdout


async def test_a_scene_on_kafka_renders_through_the_sd15_checkpoint(models_url, tower_env, settings, workers):
    # The workers' own preset is one this server cannot run: the scene's choice must win.
    workers.env = {**tower_env, "TOWER_RENDER_BACKEND": "comfyui", "TOWER_COMFY_URLS": models_url,
                   "TOWER_RENDER_PRESET": "anime-sdxl", "TOWER_COMFY_MODELS": json.dumps(MODEL_NAMES),
                   "TOWER_RENDER_WIDTH": "64", "TOWER_RENDER_HEIGHT": "64", "TOWER_RENDER_MAX_STEPS": "1",
                   "TOWER_COMFY_TIMEOUT_S": "240"}
    workers.start(*STAGE_NAMES)
    request = SceneRequested(scene_id="scene-sd15", session_id="session-sd15", max_attempts=1,
                             description="Create a scene where Kai fights the dragon", characters=["Kai", "Dragon"],
                             render_preset="anime-sd15")
    await produce(settings, [scene_envelope(request)])
    progress = await workers.watch(follow_scene(settings, "scene-sd15", timeout_s=420))
    workers.assert_alive()

    rendered = [v for topic, v in progress.events if topic == "frame.rendered"]
    assert len(rendered) == progress.shot_count
    for event in rendered:
        assert event.status == "ok", event.reason
        assert event.render_preset == "anime-sd15" and event.prompt.steps == 1 and event.prompt.context.split("|")[-1] == preset("anime-sd15").workflow(MODEL_NAMES)
        assert len(event.frames) == event.shot.frame_count
        assert (resolve(settings.media_dir, event.frames[0].uri).parent / "keyframe.png").is_file()
    assert all(s.status == "ok" for s in progress.finals.values())
    assert CHECKPOINT in json.dumps(preset("anime-sd15").graph(MODEL_NAMES))
