"""Renders in flight (TOWER_RENDER_IN_FLIGHT) against the real broker: a shot's attempts stay in
order, a killed renderer's unfinished renders are delivered again (their offsets were not
committed), and every effect is still applied once. The render backend is the `sleep` fake
(it waits like a remote render server), so several renders are surely in flight at the kill."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict

import asyncpg

from agents.registry import STAGE_NAMES
from eventlog.follow import follow_scene, produce, scene_envelope
from events.codec import decode_value
from events.envelope import header_map
from events.models import FrameRendered, RenderProgress, SceneRequested
from foundation.kafka import read_topic

SCENES = ("scene-par-1", "scene-par-2")


async def read(settings, topic: str, model):
    return [(r, decode_value(model, r.value)) for r in await read_topic(settings.kafka_bootstrap, settings.topic(topic))]


async def test_killed_renderer_with_renders_in_flight_loses_nothing_and_keeps_shot_order(settings, workers, tower_env):
    workers.env = {**tower_env, "TOWER_RENDER_BACKEND": "sleep", "TOWER_SLEEP_RENDER_S": "3", "TOWER_RENDER_IN_FLIGHT": "4",
                   "TOWER_QUALITY_THRESHOLD": "0.99", "TOWER_MAX_ATTEMPTS": "2"}  # blank frames: every shot retries once
    workers.start(*STAGE_NAMES)
    await produce(settings, [scene_envelope(SceneRequested(scene_id=sid, session_id="s", characters=["Kai"],
                                                           description="Kai runs through the city at night"))
                             for sid in SCENES])

    # Kill the renderer while four renders are started and not finished.
    deadline = time.monotonic() + 120
    while True:
        progress = [p for _, p in await read(settings, "render.progress", RenderProgress)]
        rendered = await read(settings, "frame.rendered", FrameRendered)
        started = {(p.scene_id, p.shot_number, p.attempt) for p in progress if p.kind == "started"}
        if len(started) - len(rendered) >= 4:
            break
        assert time.monotonic() < deadline, f"never 4 renders in flight: {len(started)} started, {len(rendered)} rendered"
        await asyncio.sleep(0.2)
    unfinished = started - {(v.scene_id, v.shot.shot_number, v.attempt) for _, v in rendered}
    workers.kill("renderer")
    workers.start("renderer")
    await workers.watch(asyncio.gather(*(follow_scene(settings, sid, timeout_s=240) for sid in SCENES)))

    # Redelivered: each render unfinished at the kill was started again by the new renderer.
    progress = [p for _, p in await read(settings, "render.progress", RenderProgress)]
    starts = Counter((p.scene_id, p.shot_number, p.attempt) for p in progress if p.kind == "started")
    assert unfinished and all(starts[a] >= 2 for a in unfinished), (unfinished, starts)

    # Nothing lost, nothing twice: one frame.rendered id per attempt (a repeat has the same id),
    # and within each shot the attempts in order.
    rendered = await read(settings, "frame.rendered", FrameRendered)
    ids = defaultdict(set)
    order = defaultdict(list)
    for record, value in sorted(rendered, key=lambda rv: (rv[0].partition, rv[0].offset)):
        ids[(value.scene_id, value.shot.shot_number, value.attempt)].add(header_map(record.headers)["ce_id"])
        order[record.key].append(value.attempt)
    assert all(len(v) == 1 for v in ids.values())
    assert all(attempts == sorted(attempts) for attempts in order.values()), order
    conn = await asyncpg.connect(settings.database_url)
    try:
        for _ in range(100):
            if await conn.fetchval("SELECT count(*) FROM attempts WHERE render_status IS NOT NULL") >= len(ids):
                break
            await asyncio.sleep(0.2)
        assert await conn.fetchval("SELECT count(*) FROM attempts WHERE render_status IS NOT NULL") == len(ids)
        assert await conn.fetchval("SELECT count(*) FROM scores") == len(ids)
    finally:
        await conn.close()
