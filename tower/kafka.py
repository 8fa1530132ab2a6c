"""Kafka administration at the edge: topic creation from the declarations in :mod:`events.topics`."""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

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
