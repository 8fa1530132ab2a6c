"""The memory through the real stack: scored attempts are remembered by the learner, searched by
text and by shot through `tower api` and `tower memory search`, and rebuilt from the log by a
replay to the same contents."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid

import asyncpg
import pytest

from agents.registry import STAGE_NAMES
from eventlog.follow import follow_scene, produce, scene_envelope
from store.memory import memory_digest
from store.pool import create_database, drop_database
from tests.integration.test_pipeline import kai_request


async def test_attempts_are_remembered_searched_and_rebuilt_by_a_replay(settings, workers, api_server, postgres_url):
    workers.start(*STAGE_NAMES)
    await produce(settings, [scene_envelope(kai_request("scene-mem", max_attempts=1))])
    progress = await workers.watch(follow_scene(settings, "scene-mem", timeout_s=240))
    conn = await asyncpg.connect(settings.database_url)
    try:
        for _ in range(100):  # the learner remembers a score a moment after it is produced
            if await conn.fetchval("SELECT count(*) FROM memory") >= len(progress.finals):
                break
            await asyncio.sleep(0.2)
        assert await conn.fetchval("SELECT count(*) FROM memory") == len(progress.finals)
        live = await memory_digest(conn)
    finally:
        await conn.close()

    async with api_server.client() as client:
        found = (await client.get("/api/director/memory/search", params={"q": "Kai fights the dragon", "limit": 3})).json()
        assert found["searched"] == len(progress.finals) and len(found["hits"]) == 3
        assert [h["similarity"] for h in found["hits"]] == sorted((h["similarity"] for h in found["hits"]), reverse=True)
        best = found["hits"][0]
        assert best["scene_id"] == "scene-mem" and "dragon" in best["text"].lower()
        assert best["frame_url"].startswith("/media/scene-mem/") and (await client.get(best["frame_url"])).status_code == 200

        like = (await client.get("/api/director/memory/similar/scene-mem/1")).json()
        assert like["hits"] and all(h["shot_number"] != 1 for h in like["hits"]), "other shots, not itself"
        missing = await client.get("/api/director/memory/similar/scene-mem/99")
        assert missing.status_code == 404 and "nothing remembered of shot 99" in missing.json()["detail"]

        looks = (await client.get("/api/director/memory/similar/scene-mem/1", params={"by": "look"})).json()
        assert looks["embedder"].startswith("tower-image-signature/") and looks["searched"] == len(progress.finals)
        assert looks["hits"] and all(h["shot_number"] != 1 for h in looks["hits"])
        assert [h["similarity"] for h in looks["hits"]] == sorted((h["similarity"] for h in looks["hits"]), reverse=True)

        # What people say of an attempt comes back with it (read at search time: it arrives later).
        rated = await client.post("/api/director/feedback/submit", json={
            "session_id": "session-it", "scene_id": "scene-mem", "shot_number": 1, "attempt": 1, "rating": 4,
            "comment": "the dragon reads well"})
        assert rated.status_code == 202, rated.text
        for _ in range(100):  # the learner projects the feedback a moment after it is produced
            hits = (await client.get("/api/director/memory/search", params={"q": "Kai fights the dragon",
                                                                                "limit": 100})).json()["hits"]
            [first] = [h for h in hits if (h["scene_id"], h["shot_number"], h["attempt"]) == ("scene-mem", 1, 1)]
            if first["feedback"] is not None:
                break
            await asyncio.sleep(0.2)
        assert first["feedback"] == {"count": 1, "mean_rating": 4.0, "comment": "the dragon reads well"}
        assert all(h["feedback"] is None for h in hits if h is not first)

    searched = subprocess.run([sys.executable, "-m", "tower", "memory", "search", "the dragon reels", "--json"],
                              env=workers.env, capture_output=True, text=True, timeout=60)
    assert searched.returncode == 0, searched.stderr
    assert json.loads(searched.stdout)["hits"][0]["scene_id"] == "scene-mem"

    # The memory is a projection of the log: a replay into an empty database has the same contents.
    name = f"tower_memory_{uuid.uuid4().hex[:8]}"
    url = await create_database(postgres_url, name)
    try:
        replayed = subprocess.run([sys.executable, "-m", "tower", "replay", "--database-url", url],
                                  env=workers.env, capture_output=True, text=True, timeout=120)
        assert replayed.returncode == 0, replayed.stderr
        conn = await asyncpg.connect(url)
        try:
            assert await memory_digest(conn) == live
        finally:
            await conn.close()
    finally:
        await drop_database(postgres_url, name)


async def test_the_refiner_reads_a_prior_from_the_nearest_remembered_shots(database_url, kai_shots):
    """Remembered first attempts of other scenes' like shots, where one modifier scored well, raise
    that modifier's chance in a context the pattern table has never seen."""
    from datetime import UTC, datetime

    from director.refiner import pattern_context
    from events.envelope import Envelope
    from foundation.settings import Settings
    from store.memory import MemoryCache, remember
    from store.migrate import migrate
    from store.pool import open_pool
    from store.refining import refine_planned, remembered_prior
    from tests.unit.test_learning import scored

    planned = kai_shots[0]
    workflow = "w-memory"
    context = pattern_context(planned.shot, workflow)
    pool = await open_pool(database_url)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        for i in range(6):  # the same shot planned in six earlier scenes: rim-light-drama did well there
            earlier = planned.model_copy(update={"scene_id": f"earlier-{i}"})
            modifier, composite = ("rim-light-drama", 0.95) if i % 2 else ("clean-cel", 0.2)
            await remember(pool, Envelope(id=f"mem-{i}", source="test", type="quality.scored",
                                          scene_id=earlier.scene_id, session_id="s",
                                          value=scored(earlier, modifier, composite, context=context)))
        on = Settings(database_url=database_url, memory_prior_strength=2.0, refiner_policy="thompson")
        prior = await remembered_prior(pool, planned, workflow, on, MemoryCache())
        assert set(prior) == {"rim-light-drama", "clean-cel"}
        assert sum(prior["rim-light-drama"]) == pytest.approx(2.0) and sum(prior["clean-cel"]) == pytest.approx(2.0)
        assert prior["rim-light-drama"][0] / 2.0 == pytest.approx(0.95) and prior["clean-cel"][0] / 2.0 == pytest.approx(0.2)
        # The shot's own remembered attempts are its context's own evidence, not a prior.
        unbounded = on.model_copy(update={"memory_prior_strength": 100.0})
        others = sum((await remembered_prior(pool, planned, workflow, unbounded, MemoryCache()))["rim-light-drama"])
        mine = planned.model_copy(update={"scene_id": "earlier-1"})
        own_left_out = sum((await remembered_prior(pool, mine, workflow, unbounded, MemoryCache()))["rim-light-drama"])
        assert own_left_out == pytest.approx(others * 2 / 3, rel=1e-4)  # three rim-light rows, one of them its own
        assert await remembered_prior(pool, planned, "another-workflow", on, MemoryCache()) == {}

        now = datetime.now(UTC)
        with_memory = await refine_planned(pool, planned, on, workflow=workflow, now=now, memory=MemoryCache())
        without = await refine_planned(pool, planned, on.model_copy(update={"memory_prior_strength": 0.0}),
                                       workflow=workflow, now=now, memory=MemoryCache())
        assert with_memory.prompt.context == without.prompt.context == context
        # Same seed, so the same draw: the prior shows in the logged propensity of the choice.
        assert with_memory.prompt.modifier_probability != without.prompt.modifier_probability
    finally:
        await pool.close()
