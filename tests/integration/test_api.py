"""The HTTP API through the real stack: `tower api` and the seven agents as processes, real Kafka
and PostgreSQL. Each test has its own topics, consumer groups, database and media store."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from agents.registry import STAGE_NAMES
from director.learning import Posterior, increments
from events.topics import PIPELINE, TOPICS
from store.pool import create_database, drop_database
from store.queries import pattern_table
from tests.integration.harness import REPO, wait_for_group
from tests.integration.test_pipeline import kai_shot_count
from tower.testing import free_port, start_api

KAI = {"session_id": "test", "scene_description": "Create a scene where Kai fights the dragon",
       "characters": ["Kai", "Dragon"]}


@dataclass
class ServerSentEvent:
    id: str | None
    event: str
    data: dict


async def read_sse(client: httpx.AsyncClient, path: str, *, last_event_id: str | None = None,
                   timeout_s: float = 240) -> list[ServerSentEvent]:
    """Every event of the stream until the server ends it (failing after ``timeout_s``)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[ServerSentEvent] = []

    async def read() -> None:
        async with client.stream("GET", path, headers=headers, timeout=None) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            fields: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line == "":
                    if "event" in fields:
                        events.append(ServerSentEvent(fields.get("id"), fields["event"], json.loads(fields["data"])))
                    fields = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(": ")
                    fields[name] = value

    try:
        await asyncio.wait_for(read(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"{path}: stream not ended after {timeout_s}s; got {[e.event for e in events]}") from None
    return events


async def poll(fetch, until, *, timeout_s: float = 60, what: str = "condition"):
    """``await fetch()`` until ``until(result)``; fail naming ``what`` and the last result."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await fetch()
        if until(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached after {timeout_s}s; last: {result!r}"[:3000])
        await asyncio.sleep(0.2)


async def test_seed_endpoints_live_events_feedback_and_replay(api_server, workers, settings, tower_env, postgres_url):
    workers.start(*STAGE_NAMES)
    shots = kai_shot_count(settings.render_fps)  # KAI is the planner's Kai scene
    async with api_server.client() as client:
        # The seed's own example body, on the seed's endpoint: a plan, synchronously.
        plan = await client.post("/api/director/scene/plan", json={"session_id": "test", "scene_description": "test scene"})
        assert plan.status_code == 200, plan.text
        assert plan.json()["shot_list"] and plan.json()["overall_mood"] and plan.json()["lighting_suggestions"]
        enhanced = await client.post("/api/director/prompt/enhance", json={**KAI, "shot_number": 2})
        assert enhanced.status_code == 200, enhanced.text
        prompt = enhanced.json()["prompt"]
        assert "Kai" in prompt["prompt"] and prompt["negative_prompt"] and prompt["modifier"]
        assert 0 < prompt["modifier_probability"] <= 1 and prompt["steps"] > 0
        too_far = await client.post("/api/director/prompt/enhance", json={**KAI, "shot_number": 40})
        assert too_far.status_code == 422 and f"plans {shots} shot(s)" in too_far.json()["detail"]

        # Dry runs produced nothing.
        started = await client.post("/api/director/workflow/integrate", json=KAI)
        assert started.status_code == 202, started.text
        accepted = started.json()
        scene_id = accepted["scene_id"]
        assert accepted["session_id"] == "test" and started.headers["location"] == f"/api/director/scenes/{scene_id}"

        # Live: every event of the scene, from Kafka, until it is complete.
        events = await workers.watch(read_sse(client, accepted["links"]["events"]))
        kinds = [e.event for e in events]
        assert kinds[-1] == "complete", kinds
        for topic in (spec.name for spec in PIPELINE):
            assert topic in kinds, (topic, kinds)
        assert "render.progress" in kinds
        # Topics are read concurrently, so only each event's cause, not the interleaving, is fixed.
        ids = {e.data["id"] for e in events[:-1]}
        orphans = [(e.event, e.data["id"], e.data["causation_id"], e.data.get("data", {}).get("attempt"))
                   for e in events[:-1] if e.event in {"shot.planned", "quality.scored"} and e.data["causation_id"] not in ids]
        assert not orphans, f"events whose cause was not streamed: {orphans}; streamed: {[(e.event, e.data['id']) for e in events[:-1]]}"
        finals = events[-1].data["finals"]
        assert len(finals) == events[-1].data["shot_count"] == shots
        assert all(e.data["data"]["scene_id"] == scene_id for e in events if e.event in kinds[:-1] and "data" in e.data)

        # Resuming after the fifth event sends exactly the rest: the same ids, and the same order
        # per topic and shot (one shot's events share a key, so a partition; shots interleave freely).
        resumed = await read_sse(client, accepted["links"]["events"], last_event_id=events[4].id)

        def stream_of(e) -> tuple[str, int | None]:
            data = e.data.get("data") or {}
            return e.event, (data.get("shot") or {}).get("shot_number", data.get("shot_number"))

        sent = [(stream_of(e), e.data.get("id")) for e in events[5:-1]]
        again = [(stream_of(e), e.data.get("id")) for e in resumed[:-1]]
        assert sorted(again, key=str) == sorted(sent, key=str) and resumed[-1].event == "complete"
        for stream in {s for s, _ in sent}:
            assert [i for s, i in again if s == stream] == [i for s, i in sent if s == stream]

        # The scene as the projections have it: plan, attempts, scores, frames that can be fetched.
        scene = (await poll(lambda: client.get(f"/api/director/scenes/{scene_id}"),
                            lambda r: r.status_code == 200 and r.json()["scene"]["status"] in {"complete", "needs_review"},
                            what="scene projected as finished")).json()
        assert [s["shot_number"] for s in scene["shots"]] == list(range(1, shots + 1))
        for shot in scene["shots"]:
            assert shot["accepted_attempt"] is not None
            for attempt in shot["attempts"]:
                assert attempt["score"]["status"] == "ok" and attempt["frames"]
                if attempt["attempt"] > 1:
                    assert "under the threshold" in attempt["retry_reason"]
        frame = await client.get(scene["shots"][0]["attempts"][0]["frames"][0]["url"])
        assert frame.status_code == 200 and frame.headers["content-type"] == "image/png"
        assert frame.content.startswith(b"\x89PNG")
        history = (await client.get("/api/director/sessions/test")).json()
        assert [s["scene_id"] for s in history["scenes"]] == [scene_id]
        assert (await client.get("/api/director/sessions")).json()["total"] == 1
        trends = (await client.get("/api/director/trends", params={"by": "pattern"})).json()
        assert trends["rows"] and sum(r["attempts"] for r in trends["rows"]) == sum(
            len(s["attempts"]) for s in scene["shots"])
        hourly = (await client.get("/api/director/trends", params={"bucket": "hour"})).json()
        assert hourly["bucket"] == "hour" and hourly["rows"][0]["bucket_start"].endswith(":00:00Z")
        assert all(s["fps"] == s["frame_count"] / s["duration"] for s in scene["shots"])

        # A person rates shot 1 badly; the seed's quality_scores come from another system.
        shot = scene["shots"][0]
        accepted_attempt = next(a for a in shot["attempts"] if a["attempt"] == shot["accepted_attempt"])
        key = (accepted_attempt["context"], accepted_attempt["modifier"])
        before = await _pattern(client, key)
        rated = await client.post("/api/director/feedback/submit", json={
            "session_id": "test", "scene_id": scene_id, "shot_number": 1, "rating": 1, "comment": "the dragon is off-model"})
        assert rated.status_code == 202, rated.text
        assert rated.json()["attempt"] == shot["accepted_attempt"] and rated.json()["events"][0]["source"] == "human"
        after = await poll(lambda: _pattern(client, key), lambda p: p["observations"] == before["observations"] + 1,
                           what="human rating learned")
        assert after["sources"].get("human") == 1
        # Rating 1 is reward 0, at weight 2: beta grows by 2, alpha not at all.
        assert after["beta"] == pytest.approx(before["beta"] + 2.0) and after["alpha"] == before["alpha"]
        assert after["mean"] < before["mean"]
        # Resent (same content, no id): the same event, learned once.
        resent = await client.post("/api/director/feedback/submit", json={
            "session_id": "test", "scene_id": scene_id, "shot_number": 1, "rating": 1, "comment": "the dragon is off-model"})
        assert resent.json()["events"] == rated.json()["events"]
        seed_scores = await client.post("/api/director/feedback/submit", json={
            "scene_id": scene_id, "shot_number": 1, "quality_scores": {"ssim": 0.85, "consistency": 0.90}})
        assert seed_scores.status_code == 202, seed_scores.text
        await poll(lambda: _pattern(client, key), lambda p: p["sources"].get("external") == 1, what="external scores")
        await poll(lambda: client.get(f"/api/director/scenes/{scene_id}"), lambda r: len(r.json()["feedback"]) == 2,
                   what="feedback projected")

        # Unknown ids are 404 problems, wherever they are named.
        for path in (f"/api/director/scenes/{scene_id}x", "/api/director/sessions/nobody", "/api/director/batches/nope"):
            missing = await client.get(path)
            assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json", path
        unknown_attempt = await client.post("/api/director/feedback/submit",
                                             json={"scene_id": scene_id, "shot_number": 1, "attempt": 9, "rating": 3})
        assert unknown_attempt.status_code == 404 and "attempt 9 of shot 1" in unknown_attempt.json()["detail"]
        nothing = await client.post("/api/director/feedback/submit",
                                    json={"scene_id": scene_id, "shot_number": shots + 3, "rating": 3})
        assert nothing.status_code == 404 and f"shot {shots + 3}" in nothing.json()["detail"]
        taken = await client.post("/api/director/workflow/integrate", json={**KAI, "scene_id": scene_id})
        assert taken.status_code == 409
        live = await api_server.client().get(f"/api/director/scenes/{scene_id}x/events")
        assert live.status_code == 404

        table = await _live_table(settings)

    # Replay: a new learner under its own group, into an empty database, from offset 0 of every
    # topic (feedback included): the identical pattern table.
    name = f"tower_replay_{uuid.uuid4().hex[:8]}"
    replay_url = await create_database(postgres_url, name)
    try:
        workers.stop_all()
        group = tower_env["TOWER_GROUP_PREFIX"] + "-replay"
        workers.env = {**tower_env, "TOWER_DATABASE_URL": replay_url, "TOWER_GROUP_PREFIX": group,
                       "TOWER_LEARNER_EMITS_ALERTS": "false"}
        workers.start("learner")
        await workers.watch(wait_for_group(settings.kafka_bootstrap, f"{group}-learner",
                                           [settings.topic(s.name) for s in TOPICS]))
        conn = await asyncpg.connect(replay_url)
        try:
            assert await pattern_table(conn) == table
            assert await conn.fetchval("SELECT count(*) FROM pattern_updates WHERE source = 'human'") == 1
        finally:
            await conn.close()
    finally:
        workers.stop_all()
        await drop_database(postgres_url, name)


async def _pattern(client: httpx.AsyncClient, key: tuple[str, str]) -> dict:
    """The pattern's row; the Beta(1, 1) prior if nothing was credited to it yet (an accepted
    retry's modifier may never have been a first attempt's)."""
    rows = (await client.get("/api/director/patterns")).json()["patterns"]
    prior = {"context": key[0], "modifier": key[1], "observations": 0, "alpha": 1.0, "beta": 1.0, "mean": 0.5, "sources": {}}
    return next((r for r in rows if (r["context"], r["modifier"]) == key), prior)


async def _live_table(settings):
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await pattern_table(conn)
    finally:
        await conn.close()


SEED_SCORES = {"ssim": 0.85, "consistency": 0.90}  # what the seed's client sends: reward 0.875
FEEDBACK = "/api/director/feedback/submit"


async def test_the_seed_clients_feedback_and_enhance_bodies(api_server, workers, settings):
    """The seed's client as it writes its calls: ``submit_feedback(quality_scores=...)`` with its
    session id and nothing else, and ``prompt/enhance`` with ``{"session_id", "prompt"}``."""
    seed = {"session_id": "seed-client", "quality_scores": SEED_SCORES}
    async with api_server.client() as client:
        enhanced = await client.post("/api/director/prompt/enhance",
                                     json={"session_id": "seed-client", "prompt": "Kai fights the dragon"})
        assert enhanced.status_code == 200, enhanced.text
        assert enhanced.json()["prompt"]["prompt"] and enhanced.json()["prompt"]["modifier"]

        no_session = await client.post(FEEDBACK, json=seed)
        assert no_session.status_code == 404 and "session seed-client has no scene" in no_session.json()["detail"]
        no_scene = await client.post(FEEDBACK, json={**seed, "scene_id": "scene-unknown"})
        assert no_scene.status_code == 404 and "no scene scene-unknown" in no_scene.json()["detail"]

        # Threshold 0: every shot's first attempt passes, so every shot is accepted. Only the
        # learner at first: the scene is projected, but nothing is planned, so nothing accepted.
        workers.start("learner")
        started = await client.post("/api/director/workflow/integrate", json={
            "session_id": "seed-client", "scene_description": "Kai fights the dragon", "characters": ["Kai", "Dragon"],
            "target_duration_s": 6, "quality_threshold": 0.0, "max_attempts": 1})
        assert started.status_code == 202, started.text
        scene_id = started.json()["scene_id"]
        await workers.watch(poll(lambda: client.get(f"/api/director/scenes/{scene_id}"), lambda r: r.status_code == 200,
                                 what="scene projected"))
        early = await client.post(FEEDBACK, json=seed)
        assert early.status_code == 409 and "no accepted shot yet" in early.json()["detail"], early.text
        other_session = await client.post(FEEDBACK, json={**seed, "session_id": "elsewhere", "scene_id": scene_id})
        assert other_session.status_code == 404, other_session.text

        workers.start(*(stage for stage in STAGE_NAMES if stage != "learner"))
        scene = (await workers.watch(poll(
            lambda: client.get(f"/api/director/scenes/{scene_id}"),
            lambda r: r.json()["scene"]["status"] in {"complete", "needs_review", "failed"},
            timeout_s=240, what="scene finished"))).json()
        assert scene["scene"]["status"] == "complete", scene["scene"]
        before = await _live_table(settings)

        sent = await client.post(FEEDBACK, json=seed)
        assert sent.status_code == 202, sent.text
        body = sent.json()
        n = len(scene["shots"])
        assert body["scope"] == "scene" and body["scene_id"] == scene_id and n > 1
        assert [(s["shot_number"], s["attempt"]) for s in body["shots"]] == [
            (s["shot_number"], s["accepted_attempt"]) for s in scene["shots"]]
        assert all(s["weights"] == {"external": pytest.approx(1 / n)} for s in body["shots"])
        assert len(body["events"]) == n and body["shot_number"] is None

        updates = await poll(lambda: _external_updates(settings, scene_id), lambda rows: len(rows) == n,
                             what="scene feedback learned for every accepted shot")
        assert all(u["weight"] == pytest.approx(1 / n) and u["reward"] == pytest.approx(0.875) for u in updates)
        after = await _live_table(settings)
        moved: dict[tuple[str, str], tuple[int, int, int]] = {}
        for shot in body["shots"]:
            key, step = (shot["context"], shot["modifier"]), increments(0.875, 1 / n)
            moved[key] = tuple(a + b for a, b in zip(moved.get(key, (0, 0, 0)), step, strict=True))
        assert {key for key in after if after[key] != before.get(key)} == set(moved)
        for key, (alpha, beta, square) in moved.items():
            old, new = before.get(key, Posterior()), after[key]
            assert (new.alpha_micros - old.alpha_micros, new.beta_micros - old.beta_micros,
                    new.square_micros - old.square_micros) == (alpha, beta, square)
        # One judgement of the scene: all its shots together moved the table by one score's worth.
        assert abs(sum(alpha for alpha, _, _ in moved.values()) - 875_000) <= n

        resent = await client.post(FEEDBACK, json=seed)
        assert resent.json()["events"] == body["events"], "a resent request is the same events, learned once"


async def _external_updates(settings, scene_id: str) -> list[dict]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch("SELECT shot_number, weight, reward FROM pattern_updates"
                                " WHERE scene_id = $1 AND source = 'external' ORDER BY shot_number", scene_id)
        return [dict(r) for r in rows]
    finally:
        await conn.close()


async def test_batches_from_a_list_and_from_jsonl(api_server, workers):
    workers.start(*STAGE_NAMES)
    scenes = [{"scene_description": f"Mika walks through the garden {n}", "characters": ["Mika"], "max_attempts": 1}
              for n in range(2)]
    async with api_server.client() as client:
        listed = await client.post("/api/director/batches", json={"session_id": "batch-test", "scenes": scenes})
        assert listed.status_code == 202, listed.text
        jsonl = "\n".join(json.dumps({**s, "session_id": "batch-jsonl"}) for s in scenes) + "\n"
        uploaded = await client.post("/api/director/batches", content=jsonl,
                                     headers={"content-type": "application/x-ndjson"})
        assert uploaded.status_code == 202, uploaded.text
        for batch in (listed.json(), uploaded.json()):
            assert len(batch["scene_ids"]) == 2
            progress = await workers.watch(poll(
                lambda b=batch: client.get(b["links"]["batch"]),
                lambda r: r.status_code == 200 and r.json()["done"] == 2, timeout_s=240, what="batch done"))
            body = progress.json()
            assert body["size"] == 2 and body["queued"] == body["running"] == 0
            assert sorted(s["scene_id"] for s in body["scenes"]) == sorted(batch["scene_ids"])
            assert body["needs_review"] == sum(s["status"] == "needs_review" for s in body["scenes"])

        bad_line = await client.post("/api/director/batches", content='{"scene_description": "ok"}\n[1]\n',
                                     headers={"content-type": "application/x-ndjson"})
        assert bad_line.status_code == 422 and "line 2" in bad_line.json()["detail"]
        invalid = await client.post("/api/director/batches", json={"scenes": [{"scene_description": ""}]})
        assert invalid.status_code == 422 and invalid.json()["errors"][0]["scene"] == 1
        empty = await client.post("/api/director/batches", json={"scenes": []})
        assert empty.status_code == 422
        other = await client.post("/api/director/batches", content="a,b", headers={"content-type": "text/csv"})
        assert other.status_code == 415


async def test_tokens_limits_and_traversal_on_the_real_process(api_server):
    body = {"session_id": "t", "scene_description": "Kai fights the dragon"}
    async with api_server.client(authorised=False) as anonymous, api_server.client(token="wrong") as wrong:
        for path in ("/api/director/workflow/integrate", "/api/director/feedback/submit", "/api/director/batches"):
            assert (await anonymous.post(path, json=body)).status_code == 401, path
            assert (await wrong.post(path, json=body)).status_code == 403, path
        huge = await anonymous.post("/api/director/scene/plan", content=b"x" * (3 * 1024 * 1024),
                                    headers={"content-type": "application/json"})
        assert huge.status_code == 413
        for path in ("/media/../../etc/passwd", "/media/%2e%2e/%2e%2e/etc/passwd", "/media/..%2f..%2fetc%2fpasswd"):
            refused = await anonymous.get(path)
            assert refused.status_code == 404 and b"root:" not in refused.content, path
        metrics = (await anonymous.get("/metrics")).text
        assert 'status="401"' in metrics and 'status="413"' in metrics


async def test_ready_is_503_while_postgresql_is_stopped_and_200_after(tower_env, tmp_path):
    """Against a PostgreSQL cluster of this test's own, so stopping it disturbs no other test."""
    pgctl = str(REPO / "infra/postgres/pgctl")
    data = Path(f"/var/tmp/tower-test-pg-{uuid.uuid4().hex[:8]}")  # the postgres OS user must reach it
    pg_env = {**os.environ, "TOWER_PG_PORT": str(free_port()), "TOWER_PG_DATA": str(data)}
    subprocess.run([pgctl, "start"], env=pg_env, check=True, capture_output=True, timeout=120)
    url = subprocess.run([pgctl, "url"], env=pg_env, check=True, capture_output=True, text=True).stdout.strip()
    server = start_api({**tower_env, "TOWER_DATABASE_URL": url}, tmp_path / "api.log")
    try:
        async with server.client() as client:
            ready = await poll(lambda: client.get("/ready"), lambda r: r.status_code == 200, what="ready")
            assert ready.json()["checks"] == {"kafka": "ok", "postgresql": "ok"}
            subprocess.run([pgctl, "stop"], env=pg_env, check=True, capture_output=True, timeout=60)
            down = await poll(lambda: client.get("/ready"), lambda r: r.status_code == 503, what="503 while stopped")
            assert down.headers["content-type"] == "application/problem+json"
            assert down.json()["checks"]["kafka"] == "ok" and "PostgreSQL" in down.json()["checks"]["postgresql"]
            assert (await client.get("/api/director/sessions")).status_code == 503
            subprocess.run([pgctl, "start"], env=pg_env, check=True, capture_output=True, timeout=120)
            await poll(lambda: client.get("/ready"), lambda r: r.status_code == 200, what="ready again")
            assert (await client.get("/api/director/sessions")).status_code == 200
    finally:
        server.stop()
        subprocess.run([pgctl, "stop"], env=pg_env, capture_output=True, timeout=60)
        shutil.rmtree(data, ignore_errors=True)
