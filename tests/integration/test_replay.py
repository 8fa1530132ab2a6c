"""`tower replay` against the real broker and database: the same log gives the same pattern table,
byte for byte, every time, and the same table as resetting the learner's group with Kafka's own
consumer-group tool."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import asyncpg

from agents.registry import STAGE_NAMES
from eventlog.follow import follow_scene, produce, scene_envelope
from eventlog.replay import table_digest
from events.envelope import Envelope, new_event_id
from events.models import ExternalScores, FeedbackSubmitted
from events.topics import FEEDBACK_SUBMITTED, TOPICS
from store.pool import create_database, drop_database
from tests.integration.harness import REPO, wait_for_group


def run_tower(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tower", *args], env=env, capture_output=True, text=True, timeout=120)


def printed_digest(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stderr
    return next(line.split()[-1] for line in done.stdout.splitlines() if line.startswith("pattern table sha256"))


async def digest_of(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return await table_digest(conn)
    finally:
        await conn.close()


async def test_replay_rebuilds_the_same_table_as_the_learner_and_as_a_group_reset(
    settings, workers, tower_env, postgres_url, kai_request
):
    workers.start(*STAGE_NAMES)
    await produce(settings, [scene_envelope(kai_request.model_copy(update={"scene_id": "scene-replay-cli"}))])
    await workers.watch(follow_scene(settings, "scene-replay-cli", timeout_s=240))
    # A person's rating is evidence too, and so is a judgement of the whole scene spread over three
    # shots at a third of its weight each (fractional weights, rounded once per event).
    rating = FeedbackSubmitted(scene_id="scene-replay-cli", session_id=kai_request.session_id, feedback_id="f-1",
                               shot_number=1, attempt=1, source="human", rating=2, context="wide|x|y|procedural-v1",
                               modifier="clean-cel")
    spread = [FeedbackSubmitted.model_validate({
        **rating.model_dump(), "feedback_id": "f-scene", "shot_number": shot, "source": "external", "rating": None,
        "scores": ExternalScores(ssim=0.85, consistency=0.9), "scene_shots": 3}) for shot in (1, 2, 3)]
    await produce(settings, [Envelope(id=new_event_id(), source="test", type=FEEDBACK_SUBMITTED.event_type,
                                      scene_id=value.scene_id, session_id=value.session_id, value=value)
                             for value in [rating, *spread]])
    learning = [settings.topic(s.name) for s in TOPICS]
    await workers.watch(wait_for_group(settings.kafka_bootstrap, f"{tower_env['TOWER_GROUP_PREFIX']}-learner", learning))
    workers.stop_all()
    live = await digest_of(settings.database_url)
    conn = await asyncpg.connect(settings.database_url)
    try:
        weights = await conn.fetch("SELECT weight FROM pattern_updates WHERE source = 'external'")
        assert [w["weight"] for w in weights] == [1 / 3] * 3, "the scene feedback was learned, a third per shot"
    finally:
        await conn.close()

    names = [f"tower_replay_{uuid.uuid4().hex[:8]}" for _ in range(3)]
    urls = [f"{postgres_url.rpartition('/')[0]}/{name}" for name in names]
    try:
        # Twice, each into an empty database it creates, under its own consumer group.
        first = run_tower(tower_env, "replay", "--database-url", urls[0], "--create", "--group", "replay-a")
        second = run_tower(tower_env, "replay", "--database-url", urls[1], "--create")
        assert printed_digest(first) == printed_digest(second) == live == await digest_of(urls[0])
        assert "applied" in first.stdout and " 0 malformed" in first.stdout
        # Committed under its own group, like any consumer: Kafka's tool describes it.
        port = settings.kafka_bootstrap.rpartition(":")[2]
        tool_env = {**tower_env, "TOWER_KAFKA_PORT": port}
        described = subprocess.run([str(REPO / "infra/kafka/kafkactl"), "groups", "--describe", "--group", "replay-a"],
                                   env=tool_env, capture_output=True, text=True, timeout=120)
        assert described.returncode == 0 and settings.topic("quality.scored") in described.stdout, described.stderr

        # Kafka's own way: reset the learner's group to the earliest offsets and run the learner
        # again (alerts off; the learner sends no retries) into an empty database.
        reset = subprocess.run(
            [str(REPO / "infra/kafka/kafkactl"), "groups", "--group", f"{tower_env['TOWER_GROUP_PREFIX']}-learner",
             "--reset-offsets", "--to-earliest", "--all-topics", "--execute"],
            env=tool_env, capture_output=True, text=True, timeout=120)
        assert reset.returncode == 0, reset.stderr
        await create_database(postgres_url, names[2])
        workers.env = {**tower_env, "TOWER_DATABASE_URL": urls[2], "TOWER_LEARNER_EMITS_ALERTS": "false"}
        workers.start("learner")
        await workers.watch(wait_for_group(settings.kafka_bootstrap, f"{tower_env['TOWER_GROUP_PREFIX']}-learner", learning))
        for _ in range(100):  # its last commit can precede the transaction's end by a moment
            if await digest_of(urls[2]) == live:
                break
            await asyncio.sleep(0.1)
        assert await digest_of(urls[2]) == live
    finally:
        workers.stop_all()
        for name in names:
            await drop_database(postgres_url, name)
