"""Kafka administration at the edge: topic creation from the declarations in :mod:`events.topics`."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError
from aiokafka.structs import ConsumerRecord

from events.topics import DEAD_LETTER_PARTITIONS, DEAD_LETTER_RETENTION_MS, SIDE_TOPICS, TOPICS, dead_letter_topic
from tower.settings import Settings


def declared_topics(settings: Settings) -> list[NewTopic]:
    topics = []
    for spec in TOPICS:
        name = settings.topic(spec.name)
        topics.append(NewTopic(name, spec.partitions, 1, topic_configs={"retention.ms": str(spec.retention_ms)}))
        topics.append(
            NewTopic(
                dead_letter_topic(name),
                DEAD_LETTER_PARTITIONS,
                1,
                topic_configs={"retention.ms": str(DEAD_LETTER_RETENTION_MS)},
            )
        )
    for spec in SIDE_TOPICS:
        topics.append(
            NewTopic(settings.topic(spec.name), spec.partitions, 1, topic_configs={"retention.ms": str(spec.retention_ms)})
        )
    return topics


async def ensure_topics(settings: Settings, *, timeout_s: float = 30.0) -> list[str]:
    """Create the declared topics that do not exist yet; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="tower-admin")
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (KafkaConnectionError, asyncio.TimeoutError) as exc:
        raise ConnectionError(
            f"cannot reach Kafka at {settings.kafka_bootstrap!r}: {exc}. Start it with "
            "`make services` or point TOWER_KAFKA_BOOTSTRAP at a running broker."
        ) from exc
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in declared_topics(settings) if t.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another process won the race; the topics are there either way
        return [t.name for t in missing]
    finally:
        await admin.close()


async def partitions_of(consumer: AIOKafkaConsumer, topic: str, *, timeout_s: float = 5.0) -> list[TopicPartition]:
    """The partitions of ``topic``, refreshing metadata until it appears; :class:`LookupError` if not."""
    deadline = time.monotonic() + timeout_s
    while not (found := consumer.partitions_for_topic(topic)):
        if time.monotonic() > deadline:
            raise LookupError(f"topic {topic!r} does not exist; run `tower topics create`")
        await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public refresh
        await asyncio.sleep(0.1)
    return [TopicPartition(topic, p) for p in sorted(found)]


async def read_topic(bootstrap: str, topic: str, *, expect: int = 0, timeout_s: float = 30.0) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the beginning, once caught up with its end (waiting up to
    ``timeout_s`` for at least ``expect`` records). Joins no consumer group, commits nothing."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        partitions = await partitions_of(consumer, topic, timeout_s=timeout_s)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[ConsumerRecord] = []
        while True:
            ends = await consumer.end_offsets(partitions)
            for batch in (await consumer.getmany(timeout_ms=300)).values():
                records.extend(batch)
            positions = [await consumer.position(tp) for tp in partitions]
            caught_up = all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True))
            if caught_up and (len(records) >= expect or time.monotonic() > deadline):
                return records
    finally:
        await consumer.stop()
