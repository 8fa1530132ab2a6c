"""A scene through all seven agents on the real broker, projected into the real database."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg

from agents.registry import STAGE_NAMES
from director.escalation import credited, rung
from director.learning import fold_all, is_final
from director.planner import plan_scene
from eventlog.follow import follow_scene, produce, scene_envelope
from events.codec import decode_value
from events.envelope import header_map, scene_of_key
from events.models import QualityScored, SceneRequested, ShotReviewRequested
from events.topics import BY_NAME, PIPELINE, SCENE_ASSEMBLED, TOPICS
from foundation.kafka import read_topic
from store.queries import pattern_table
from tests.integration.harness import until_assembled, wait_for_group

KAI = "Create a scene where Kai fights the dragon"


def kai_request(scene_id: str, **overrides) -> SceneRequested:
    return SceneRequested(
        scene_id=scene_id, session_id="session-it", description=KAI, characters=["Kai", "Dragon"], **overrides
    )


def kai_shot_count(fps: int = 4) -> int:
    """How many shots the planner gives the Kai scene: the tests follow the planner, not a literal."""
    return len(plan_scene(kai_request("count"), fps=fps).shots)


async def topic_events(settings, scene_id: str) -> dict[str, list]:
    """Every event of the scene per topic: (envelope headers, value, record); its cut included."""
    result = {}
    for spec in (*PIPELINE, SCENE_ASSEMBLED):
        records = await read_topic(settings.kafka_bootstrap, settings.topic(spec.name))
        result[spec.name] = [
            (header_map(r.headers), decode_value(spec.model, r.value), r)
            for r in records
            if scene_of_key(r.key) == scene_id
        ]
    return result


async def test_scene_crosses_all_five_topics_in_order_and_is_projected(settings, workers):
    workers.start(*STAGE_NAMES)
    await produce(settings, [scene_envelope(kai_request("scene-e2e"))])
    progress = await workers.watch(follow_scene(settings, "scene-e2e", timeout_s=240))
    await workers.watch(until_assembled(settings.kafka_bootstrap, settings.topic("scene.assembled"), "scene-e2e"))
    workers.assert_alive()
    events = await topic_events(settings, "scene-e2e")

    # Every topic carried the scene, and each event names the one it came from.
    assert all(events[spec.name] for spec in PIPELINE), {k: len(v) for k, v in events.items()}
    by_id = {h["ce_id"]: (topic, h, v) for topic, items in events.items() for h, v, _ in items}
    expected_parent = {
        "shot.planned": {"scene.requested", "quality.scored"},  # attempt 1 / retries
        "prompt.refined": {"shot.planned"},
        "frame.rendered": {"prompt.refined"},
        "quality.scored": {"frame.rendered"},
        "scene.assembled": {"quality.scored"},  # the score that made the last shot final
    }
    for topic, parents in expected_parent.items():
        for headers, value, record in events[topic]:
            parent_topic, parent_headers, _ = by_id[headers["ce_causationid"]]
            assert parent_topic in parents
            assert parent_headers["ce_time"] <= headers["ce_time"]
            assert headers["ce_type"] == BY_NAME[topic].event_type
            shot = getattr(value, "shot", None)
            assert headers["ce_correlationid"] == "scene-e2e"
            assert record.key == (f"scene-e2e/{shot.shot_number}" if shot else "scene-e2e").encode()
    shot_count = progress.shot_count
    assert shot_count == kai_shot_count(settings.render_fps) and len(progress.finals) == shot_count
    planned = [v for _, v, _ in events["shot.planned"]]
    assert sorted(v.shot.shot_number for v in planned if v.attempt == 1) == list(range(1, shot_count + 1))
    scored = [v for _, v, _ in events["quality.scored"]]
    assert all(isinstance(v, QualityScored) and v.status == "ok" and 0 <= v.composite <= 1 for v in scored)
    # Render progress reached its side topic for every attempt, keyed by the scene.
    progress_events = [p for topic, p in progress.events if topic == "render.progress"]
    finished = {(p.shot_number, p.attempt) for p in progress_events if p.kind == "finished"}
    assert finished == {(v.shot.shot_number, v.attempt) for v in scored}
    # Every retry follows a score under the threshold, within the attempt budget, one rung up
    # the escalation ladder, and says why.
    for retry in (v for v in planned if v.attempt > 1):
        previous = next(s for s in scored if s.shot.shot_number == retry.shot.shot_number and s.attempt == retry.attempt - 1)
        assert not previous.passed and retry.attempt <= retry.max_attempts
        assert retry.escalation == rung(retry.attempt) and retry.retry_reason.startswith(f"attempt {previous.attempt} ")
    # A shot that spent its budget under the threshold went to human review, once.
    spent = {s.shot.shot_number for s in scored if is_final(s) and not s.passed}
    reviews = [ShotReviewRequested.model_validate_json(r.value) for r in await read_topic(
        settings.kafka_bootstrap, settings.topic("shot.review"), expect=len(spent), timeout_s=30 if spent else 3)]
    assert sorted(r.shot_number for r in reviews) == sorted(spent)

    # The learner has projected every event exactly once; wait for it to catch up.
    total = sum(len(v) for v in events.values())
    conn = await asyncpg.connect(settings.database_url)
    try:
        for _ in range(100):
            if await conn.fetchval("SELECT count(*) FROM event_log WHERE scene_id = 'scene-e2e'") >= total:
                break
            await asyncio.sleep(0.2)
        logged = Counter(r["event_type"] for r in await conn.fetch("SELECT event_type FROM event_log"))
        assert logged == Counter({BY_NAME[t].event_type: len(items) for t, items in events.items()})
        assert await conn.fetchval("SELECT count(*) FROM shots WHERE scene_id = 'scene-e2e'") == shot_count
        assert await conn.fetchval("SELECT count(*) FROM attempts") == len(planned)
        assert await conn.fetchval("SELECT count(*) FROM scores") == len(scored)
        frames = sum(len(v.frames) for _, v, _ in events["frame.rendered"])
        assert await conn.fetchval("SELECT count(*) FROM frames") == frames
        db_scores = {(r["shot_number"], r["attempt"]): r["composite"] for r in await conn.fetch("SELECT * FROM scores")}
        assert db_scores == {(v.shot.shot_number, v.attempt): v.composite for v in scored}
        assert await conn.fetchval("SELECT scene_count FROM sessions WHERE session_id = 'session-it'") == 1

        # The pattern table changed, and it is exactly the fold of quality.scored.
        table = await pattern_table(conn)
        credited_scores = [v for v in scored if credited(v)]
        assert len(credited_scores) == shot_count, "every shot's first attempt is credited, no retry is"
        assert table and sum(p.observations for p in table.values()) == len(credited_scores)
        assert table == fold_all(scored)
        assert await conn.fetchval("SELECT count(*) FROM pattern_updates") == len(credited_scores)
    finally:
        await conn.close()


async def test_replaying_quality_scored_rebuilds_the_same_pattern_table(settings, workers, tower_env, database_url):
    workers.start(*STAGE_NAMES)
    # Every attempt under the threshold: each shot is retried once, then sent to review.
    await produce(settings, [scene_envelope(kai_request("scene-replay", quality_threshold=0.99, max_attempts=2))])
    await workers.watch(follow_scene(settings, "scene-replay", timeout_s=240))
    conn = await asyncpg.connect(settings.database_url)
    try:
        scored = len([r for r in await read_topic(settings.kafka_bootstrap, settings.topic("quality.scored"))
                      if credited(QualityScored.model_validate_json(r.value))])
        for _ in range(100):
            if await conn.fetchval("SELECT count(*) FROM pattern_updates") >= scored:
                break
            await asyncio.sleep(0.2)
        live = await pattern_table(conn)

        # A second learner and retry controller, new consumer groups from offset 0, over the same
        # database: every event is recognised, nothing is applied twice, no retry is sent again.
        workers.stop_all()
        follow_ups = {name: len(await read_topic(settings.kafka_bootstrap, settings.topic(name)))
                      for name in ("shot.planned", "shot.review")}
        assert follow_ups["shot.planned"] > kai_shot_count(settings.render_fps), "no shot was retried"
        replay = {**tower_env, "TOWER_GROUP_PREFIX": tower_env["TOWER_GROUP_PREFIX"] + "-replay",
                  "TOWER_LEARNER_EMITS_ALERTS": "false"}
        workers.env = replay
        workers.start("learner", "retrier")
        topics = [settings.topic(spec.name) for spec in TOPICS]
        await workers.watch(wait_for_group(settings.kafka_bootstrap, replay["TOWER_GROUP_PREFIX"] + "-learner", topics))
        await workers.watch(wait_for_group(settings.kafka_bootstrap, replay["TOWER_GROUP_PREFIX"] + "-retrier",
                                           [settings.topic("quality.scored")]))
        assert await pattern_table(conn) == live
        assert {name: len(await read_topic(settings.kafka_bootstrap, settings.topic(name)))
                for name in follow_ups} == follow_ups, "a replayed retry controller sent follow-ups again"

        # From scratch: wipe the learner's tables and replay again into the empty database.
        workers.stop_all()
        await conn.execute("TRUNCATE processed_events, event_log, sessions, scenes, shots, attempts,"
                           " frames, scores, patterns, pattern_updates")
        workers.env = {**replay, "TOWER_GROUP_PREFIX": tower_env["TOWER_GROUP_PREFIX"] + "-rebuild"}
        planned_before = len(await read_topic(settings.kafka_bootstrap, settings.topic("shot.planned")))
        workers.start("learner")
        for _ in range(150):
            if await conn.fetchval("SELECT count(*) FROM pattern_updates") >= scored:
                break
            await asyncio.sleep(0.2)
        assert await pattern_table(conn) == live
        # Retraining re-issued no shots (the learner decides none; no retry controller runs).
        await workers.watch(wait_for_group(settings.kafka_bootstrap, tower_env["TOWER_GROUP_PREFIX"] + "-rebuild-learner", topics))
        assert len(await read_topic(settings.kafka_bootstrap, settings.topic("shot.planned"))) == planned_before
    finally:
        await conn.close()
