"""Kafka administration at the edge: topic creation from the declarations in :mod:`events.topics`,
replicated as the cluster allows, and reading topics."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from aiokafka.structs import ConsumerRecord

from events.topics import DEAD_LETTER_PARTITIONS, DEAD_LETTER_RETENTION_MS, SIDE_TOPICS, TOPICS, dead_letter_topic
from foundation.settings import Settings

log = logging.getLogger("tower.kafka")


@dataclass(frozen=True)
class Replication:
    """How many copies each topic keeps, and how many a write (acks=all) must reach."""

    factor: int
    min_insync: int

    @classmethod
    def for_cluster(cls, settings: Settings, brokers: int) -> Replication:
        """The settings' replication, or what a cluster of ``brokers`` can hold (at most 3)."""
        factor = settings.replication_factor or min(3, brokers)
        if factor > brokers:
            raise ValueError(
                f"TOWER_REPLICATION_FACTOR={factor} but the cluster at {settings.kafka_bootstrap!r} has "
                f"{brokers} broker(s); lower it or add brokers"
            )
        min_insync = settings.min_insync_replicas or (2 if factor >= 3 else 1)
        if min_insync > factor:
            raise ValueError(f"TOWER_MIN_INSYNC_REPLICAS={min_insync} is more than the replication factor {factor}")
        return cls(factor, min_insync)


def declared_topics(settings: Settings, replication: Replication = Replication(1, 1)) -> list[NewTopic]:
    def topic(name: str, partitions: int, retention_ms: int) -> NewTopic:
        return NewTopic(name, partitions, replication.factor, topic_configs={
            "retention.ms": str(retention_ms), "min.insync.replicas": str(replication.min_insync),
            "max.message.bytes": str(settings.max_message_bytes),
        })

    topics = []
    for spec in TOPICS:
        name = settings.topic(spec.name)
        topics.append(topic(name, settings.topic_partitions, spec.retention_ms))
        topics.append(topic(dead_letter_topic(name), DEAD_LETTER_PARTITIONS, DEAD_LETTER_RETENTION_MS))
    for spec in SIDE_TOPICS:
        topics.append(topic(settings.topic(spec.name), settings.topic_partitions, spec.retention_ms))
    return topics


def fewer_partitions(described: list[dict], declared: list[NewTopic]) -> list[str]:
    """Existing topics (from ``describe_topics``) with fewer partitions than declared."""
    wanted = {t.name: t.num_partitions for t in declared}
    return sorted(
        f"{t['topic']} has {len(t['partitions'])} partition(s), not {wanted[t['topic']]}"
        for t in described
        if t.get("partitions") and t["topic"] in wanted and len(t["partitions"]) < wanted[t["topic"]]
    )


def under_replicated(described: list[dict], replication: Replication) -> list[str]:
    """Topics (from ``describe_topics``) with fewer replicas than ``replication`` asks for."""
    return sorted(
        f"{t['topic']} has {min(len(p['replicas']) for p in t['partitions'])} replica(s), not {replication.factor}"
        for t in described
        if t.get("partitions") and min(len(p["replicas"]) for p in t["partitions"]) < replication.factor
    )


async def delete_topics(bootstrap: str, prefix: str) -> None:
    """Delete the topics named ``prefix...`` (a test's or a benchmark's own), so that runs do not
    pile partitions up in the broker (thousands of them once ran its 512 MiB heap out); a broker
    that is gone is left alone."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await asyncio.wait_for(admin.start(), 10)
        names = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    except (OSError, asyncio.TimeoutError, KafkaError):
        pass  # cleanup only: a run that stopped the broker must not fail in teardown
    finally:
        await admin.close()


async def ensure_topics(settings: Settings, *, timeout_s: float = 30.0) -> list[str]:
    """Create the declared topics that do not exist yet, replicated as the cluster allows (see
    :class:`Replication`); return the names created. Existing topics with fewer replicas than
    asked for are logged (Kafka cannot change that in place: reassign them with its tools)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="tower-admin")
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (KafkaConnectionError, asyncio.TimeoutError) as exc:
        raise ConnectionError(
            f"cannot reach Kafka at {settings.kafka_bootstrap!r}: {exc}. Start it with "
            "`make services` or point TOWER_KAFKA_BOOTSTRAP at a running broker."
        ) from exc
    try:
        brokers = len((await admin.describe_cluster())["brokers"])
        replication = Replication.for_cluster(settings, brokers)
        declared = declared_topics(settings, replication)
        existing = set(await admin.list_topics())
        missing = [t for t in declared if t.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another process won the race; the topics are there either way
        present = [t.name for t in declared if t.name in existing]
        described = await admin.describe_topics(present) if present else []
        for warning in under_replicated(described, replication):
            log.warning("under-replicated: %s (TOWER_REPLICATION_FACTOR)", warning)
        for warning in fewer_partitions(described, declared):
            # Not added here: more partitions move keys to other partitions, so a shot's
            # attempts in flight could be read out of order. Add them with Kafka's tool when idle.
            log.warning("%s (TOWER_TOPIC_PARTITIONS); add partitions with `kafkactl topics --alter` "
                        "while the pipeline is idle", warning)
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
