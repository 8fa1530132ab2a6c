"""Real services for the integration tests, and worker processes to start, kill and restart.

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

from aiokafka import AIOKafkaConsumer, TopicPartition

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


async def read_topic(bootstrap: str, topic: str, *, expect: int = 0, timeout_s: float = 30.0) -> list:
    """Every record of ``topic`` from the beginning (waiting up to ``timeout_s`` for ``expect``)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = None
        deadline = time.monotonic() + timeout_s
        while partitions is None:
            found = consumer.partitions_for_topic(topic)
            if found:
                partitions = [TopicPartition(topic, p) for p in sorted(found)]
            elif time.monotonic() > deadline:
                raise LookupError(f"topic {topic} not found")
            else:
                await consumer._client.force_metadata_update()  # noqa: SLF001
                await asyncio.sleep(0.2)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list = []
        while True:
            ends = await consumer.end_offsets(partitions)
            batches = await consumer.getmany(timeout_ms=300)
            for batch in batches.values():
                records.extend(batch)
            positions = [await consumer.position(tp) for tp in partitions]
            caught_up = all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True))
            if caught_up and (len(records) >= expect or time.monotonic() > deadline):
                return records
    finally:
        await consumer.stop()
