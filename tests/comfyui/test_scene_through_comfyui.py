"""A scene through the seven agents on the real broker with the ComfyUI render backend."""

from __future__ import annotations

import asyncpg
import pytest

from agents.registry import STAGE_NAMES
from eventlog.follow import follow_scene, produce, scene_envelope
from events.models import SceneRequested
from render.media import resolve
from tests.integration.test_pipeline import kai_shot_count

pytestmark = [pytest.mark.comfyui, pytest.mark.integration]


async def test_scene_renders_on_comfyui_and_is_scored(comfy_urls, tower_env, settings, workers):
    workers.env = {**tower_env, "TOWER_RENDER_BACKEND": "comfyui", "TOWER_COMFY_URLS": ",".join(comfy_urls),
                   "TOWER_COMFY_TIMEOUT_S": "60"}
    workers.start(*STAGE_NAMES)
    request = SceneRequested(scene_id="scene-comfy", session_id="session-comfy", max_attempts=1,
                             description="Create a scene where Kai fights the dragon", characters=["Kai", "Dragon"])
    await produce(settings, [scene_envelope(request)])
    progress = await workers.watch(follow_scene(settings, "scene-comfy", timeout_s=240))
    workers.assert_alive()

    rendered = [v for topic, v in progress.events if topic == "frame.rendered"]
    assert len(rendered) == progress.shot_count == kai_shot_count(settings.render_fps)
    for event in rendered:
        assert event.status == "ok" and event.backend == "comfyui", event.reason
        assert len(event.frames) == event.shot.frame_count
        for frame in event.frames:
            path = resolve(settings.media_dir, frame.uri)
            assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert event.prompt.context.split("|")[-1].startswith("comfyui-")
    scored = list(progress.finals.values())
    assert all(s.status == "ok" and s.frame_count == s.shot.frame_count for s in scored)

    conn = await asyncpg.connect(settings.database_url)
    try:
        backends = {r["backend"] for r in await conn.fetch("SELECT backend FROM attempts")}
    finally:
        await conn.close()
    assert backends <= {"comfyui", None}
