"""Fault injection on a three-broker Kafka cluster on this machine (`kafkactl cluster`): Tower's topics get three
replicas and min.insync.replicas 2, and a scene in flight survives a broker crash."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.kafka, pytest.mark.postgres]
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from agents.registry import STAGE_NAMES
from eventlog.follow import follow_scene, produce, scene_envelope
from events.envelope import header_map
from events.topics import TOPICS
from foundation.kafka import ensure_topics, read_topic
from foundation.settings import Settings
from tests.integration.harness import REPO, until_assembled, warm_up
from tests.integration.test_pipeline import kai_request

KAFKACTL = str(REPO / "infra/kafka/kafkactl")


def free_run(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no run of free ports")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    data = tmp_path_factory.mktemp("kafka-cluster")
    env = {**os.environ, "TOWER_KAFKA_PORT": str(free_run(3)), "TOWER_KAFKA_CONTROLLER_PORT": str(free_run(3)),
           "TOWER_KAFKA_DATA": str(data), "TOWER_KAFKA_HEAP_OPTS": "-Xms128m -Xmx384m"}
    started = subprocess.run([KAFKACTL, "cluster", "start", "3"], env=env, capture_output=True, text=True, timeout=240)
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        asyncio.run(warm_up(started.stdout.strip().splitlines()[-1]))
        yield {**env, "bootstrap": started.stdout.strip().splitlines()[-1]}
    finally:
        # A throwaway cluster: no need for a slow controlled shutdown.
        subprocess.run([KAFKACTL, "cluster", "stop", "3"], env={**env, "TOWER_KAFKA_STOP_TIMEOUT": "3"},
                       capture_output=True, timeout=180)
        shutil.rmtree(data, ignore_errors=True)


async def test_topics_are_replicated_three_times_and_a_scene_survives_a_broker_crash(
    cluster, tower_env, workers, tmp_path: Path
):
    # Three partitions a topic: the subject is losing a broker, and 3 brokers on this small machine
    # re-elect leaders for every partition of every topic when one dies.
    env = {**tower_env, "TOWER_KAFKA_BOOTSTRAP": cluster["bootstrap"], "TOWER_TOPIC_PARTITIONS": "3"}
    workers.env = env
    settings = Settings(kafka_bootstrap=cluster["bootstrap"], topic_prefix=env["TOWER_TOPIC_PREFIX"],
                        database_url=env["TOWER_DATABASE_URL"], topic_partitions=3)
    # The topics exist before anything reads them: the scene follower looks its partitions up
    # once (workers also create them, but a loaded machine can start them after the follower).
    await ensure_topics(settings, timeout_s=120)
    workers.start(*STAGE_NAMES)

    scored = asyncio.Event()
    follower = asyncio.create_task(follow_scene(
        settings, "scene-cluster", timeout_s=300, on_event=lambda topic, _: topic == "quality.scored" and scored.set()))
    await produce(settings, [scene_envelope(kai_request("scene-cluster", max_attempts=2))])
    first_score = asyncio.ensure_future(scored.wait())
    done, _ = await workers.watch(asyncio.wait({first_score, follower}, timeout=240,
                                               return_when=asyncio.FIRST_COMPLETED))
    if follower in done and not first_score.done():
        follower.result()  # the follower failed: its error says why
    assert first_score.done(), "no quality.scored within 240 s"

    admin = AIOKafkaAdminClient(bootstrap_servers=cluster["bootstrap"])
    await admin.start()
    try:
        names = [settings.topic(spec.name) for spec in TOPICS]
        for topic in await admin.describe_topics(names):
            assert all(len(p["replicas"]) == 3 for p in topic["partitions"]), topic
        [configs] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, names[0])])
        values = {entry[0]: entry[1] for entry in configs.resources[0][4]}
        assert values["min.insync.replicas"] == "2"
    finally:
        await admin.close()

    # Mid-scene, one of the three brokers crashes; two copies remain, so writes go on.
    killed = subprocess.run([KAFKACTL, "cluster", "kill", "2", "3"], env=cluster, capture_output=True, text=True)
    assert killed.returncode == 0, killed.stderr
    try:
        progress = await workers.watch(follower)
        workers.assert_alive()
        assert len(progress.finals) == progress.shot_count

        # Nothing applied twice: one projection row per distinct event (the scene's cut included).
        await workers.watch(until_assembled(cluster["bootstrap"], settings.topic("scene.assembled"), "scene-cluster"))
        events = {spec.name: await read_topic(cluster["bootstrap"], settings.topic(spec.name)) for spec in TOPICS}
        distinct = sum(len({header_map(r.headers)["ce_id"] for r in records}) for records in events.values())
        conn = await asyncpg.connect(settings.database_url)
        try:
            for _ in range(150):
                if await conn.fetchval("SELECT count(*) FROM event_log") >= distinct:
                    break
                await asyncio.sleep(0.2)
            assert await conn.fetchval("SELECT count(*) FROM event_log") == distinct
            assert await conn.fetchval("SELECT count(*) FROM pattern_updates") == await conn.fetchval(
                "SELECT count(*) FROM scores WHERE status = 'ok' AND credited")
        finally:
            await conn.close()
    finally:
        workers.stop_all()

