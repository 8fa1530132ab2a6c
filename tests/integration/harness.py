"""Real services for the integration tests, and waiting for a consumer group to catch up.

Kafka: ``TOWER_KAFKA_BOOTSTRAP`` if set, else testcontainers when a Docker engine answers, else
the native broker (``infra/kafka/kafkactl start``). PostgreSQL likewise with
``TOWER_DATABASE_URL`` / testcontainers / ``infra/postgres/pgctl start``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from foundation.kafka import partitions_of

REPO = Path(__file__).resolve().parents[2]


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


@contextmanager
def kafka_service() -> Iterator[str]:
    if os.environ.get("TOWER_KAFKA_BOOTSTRAP"):
        yield os.environ["TOWER_KAFKA_BOOTSTRAP"]
    elif docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        subprocess.run([REPO / "infra/kafka/kafkactl", "start"], check=True)
        yield f"127.0.0.1:{os.environ.get('TOWER_KAFKA_PORT', '9092')}"


async def warm_up(bootstrap: str, timeout_s: float = 180.0) -> None:
    """Have a fresh broker create its group coordinator's topic (``__consumer_offsets``, 50
    partitions) now, before any test: otherwise the first test's consumer groups wait for it."""
    import uuid

    from aiokafka import TopicPartition
    from aiokafka.admin import NewTopic

    topic = f"tower-warm-up-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=topic, enable_auto_commit=False)
        await consumer.start()
        try:
            deadline = time.monotonic() + timeout_s
            while not consumer.assignment():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the broker at {bootstrap} gave no consumer group an assignment in {timeout_s:.0f} s")
                await consumer.getmany(timeout_ms=500)
            await consumer.commit({TopicPartition(topic, 0): 0})
        finally:
            await consumer.stop()
        await admin.delete_topics([topic])
    finally:
        await admin.close()


@contextmanager
def postgres_service() -> Iterator[str]:
    if os.environ.get("TOWER_DATABASE_URL"):
        yield os.environ["TOWER_DATABASE_URL"]
    elif docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as pg:
            yield pg.get_connection_url()
    else:
        subprocess.run([REPO / "infra/postgres/pgctl", "start"], check=True)
        yield subprocess.run(
            [REPO / "infra/postgres/pgctl", "url"], check=True, capture_output=True, text=True
        ).stdout.strip()


async def wait_for_group(bootstrap: str, group: str, topics: list[str], *, timeout_s: float = 120.0) -> None:
    """Wait until consumer group ``group`` has committed the end offset of every non-empty partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        partitions = [tp for topic in topics for tp in await partitions_of(consumer, topic)]
        ends = {tp: end for tp, end in (await consumer.end_offsets(partitions)).items() if end > 0}
        deadline = time.monotonic() + timeout_s
        while True:
            committed = await admin.list_consumer_group_offsets(group)
            behind = {tp: end for tp, end in ends.items() if tp not in committed or committed[tp].offset < end}
            if not behind:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"group {group} still behind on {behind}")
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()
        await admin.close()


async def until_assembled(bootstrap: str, topic: str, scene_id: str, *, timeout_s: float = 120.0) -> list:
    """The ``scene.assembled`` records of ``scene_id`` on ``topic``, once there is one: the editor
    cuts a scene shortly after its last shot is final, so a test that counts every event of a
    finished scene waits for it first."""
    from events.envelope import scene_of_key
    from foundation.kafka import read_topic

    deadline = time.monotonic() + timeout_s
    while True:
        records = [r for r in await read_topic(bootstrap, topic, timeout_s=2) if scene_of_key(r.key) == scene_id]
        if records:
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"scene {scene_id} was not assembled on {topic} within {timeout_s:.0f} s")
        await asyncio.sleep(0.3)
