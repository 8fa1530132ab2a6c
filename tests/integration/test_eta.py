"""The scene ETA from the history of finished scenes, through the real pipeline, database and API."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from agents.registry import STAGE_NAMES
from director.planner import plan_scene
from eventlog.follow import follow_scene, produce, scene_envelope
from render import procedural
from store.eta import scene_timings
from tests.integration.test_pipeline import KAI, kai_request
from tower.cli.scenes import eta_line


async def until_timed(database_url: str, workflow: str, count: int, timeout_s: float = 60) -> list:
    """The finished scenes' timings once the learner has projected ``count`` of them."""
    deadline = time.monotonic() + timeout_s
    conn = await asyncpg.connect(database_url)
    try:
        while len(timings := await scene_timings(conn, workflow)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(timings)} finished scene(s) of {workflow} after {timeout_s} s, not {count}")
            await asyncio.sleep(0.2)
        return timings
    finally:
        await conn.close()


async def test_a_finished_scene_times_the_next_ones_plan(settings, workers, api_server):
    request = kai_request("scene-eta")
    async with api_server.client() as client:
        before = (await client.post("/api/director/scene/plan",
                                    json={"session_id": "s", "scene_description": KAI, "characters": ["Kai", "Dragon"]})).json()
    assert before["eta"] is None and before["eta_note"] == f"no ETA yet: no scene rendered with {procedural.WORKFLOW} has finished"
    assert "no ETA yet" in await eta_line(settings, request)

    workers.start(*STAGE_NAMES)
    started = time.monotonic()
    await produce(settings, [scene_envelope(request)])
    await workers.watch(follow_scene(settings, "scene-eta", timeout_s=240))
    elapsed = time.monotonic() - started

    [timing] = await until_timed(settings.database_url, procedural.WORKFLOW, 1)
    frames = sum(shot.frame_count for shot in plan_scene(request, fps=settings.render_fps).shots)
    assert timing.frames == frames
    assert 0 < timing.seconds <= elapsed + 1, (timing.seconds, elapsed)

    async with api_server.client() as client:
        after = (await client.post("/api/director/scene/plan",
                                   json={"session_id": "s", "scene_description": KAI, "characters": ["Kai", "Dragon"]})).json()
    assert after["eta"] == {"seconds": round(timing.seconds, 1), "from_scenes": 1, "workflow": procedural.WORKFLOW,
                            "method": "per-frame"}, after
    assert f"ETA {timing.seconds:.0f} s (from the 1 latest finished scenes" in await eta_line(settings, request)
