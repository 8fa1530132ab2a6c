"""``tower replay``: rebuild the pattern table from the log into a database.

Reads ``quality.scored`` and ``feedback.submitted`` (the learner's evidence) from the beginning,
or from a time, up to their end offsets when the replay started, and applies each event as the
learner does (:func:`store.projections.apply_event`, claimed as the learner's, so a learner
started later on the same database does not apply them again). It produces nothing: no retry
is re-issued. Offsets are committed under the replay's own consumer group, so the replay shows
in consumer-group dashboards and tools like any consumer.

The pattern table is a pure, order-independent function of those events (integer micro-units,
event-time timestamps): the same log gives the same table, byte for byte
(:func:`table_digest`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from events.codec import Malformed, decode_value
from events.envelope import EnvelopeError, open_envelope
from events.topics import FEEDBACK_SUBMITTED, QUALITY_SCORED, TopicSpec
from foundation.kafka import partitions_of
from foundation.settings import Settings
from store.pool import open_pool
from store.projections import Origin, apply_event

LEARNING_TOPICS: tuple[TopicSpec, ...] = (QUALITY_SCORED, FEEDBACK_SUBMITTED)
# Claimed as the learner's: see the module docstring.
CLAIMED_AS = "learner"


@dataclass(frozen=True)
class ReplayResult:
    events: int  # read from the log
    applied: int  # new to the database (the rest had been applied before)
    skipped: int  # malformed: the learner dead-letters those, and learns nothing from them
    seconds: float
    table_sha256: str

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


# (done, total): called after every batch.
Progress = Callable[[int, int], None]


async def replay(
    settings: Settings, database_url: str, *, group: str, since: datetime | None = None,
    progress: Progress | None = None,
) -> ReplayResult:
    """Replay the learner's evidence into ``database_url`` (migrated first) under ``group``."""
    started = time.monotonic()
    pool = await open_pool(database_url)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_records=500,
    )
    await consumer.start()
    try:
        specs: dict[str, TopicSpec] = {settings.topic(spec.name): spec for spec in LEARNING_TOPICS}
        partitions = [tp for name in specs for tp in await partitions_of(consumer, name)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await _seek(consumer, partitions, ends, since)
        starts = {tp: await consumer.position(tp) for tp in partitions}
        total = sum(max(0, ends[tp] - starts[tp]) for tp in partitions)
        events = applied = skipped = 0
        if progress:
            progress(0, total)
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        continue  # written after the replay started: not part of this replay
                    events += 1
                    outcome = await _apply(pool, specs[tp.topic], record)
                    applied += outcome is True
                    skipped += outcome is None
            if batches:
                await consumer.commit({tp: min(await consumer.position(tp), ends[tp]) for tp in partitions})
            if progress:
                progress(events, total)
        digest = await table_digest(pool)
    finally:
        await consumer.stop()
        await pool.close()
    return ReplayResult(events, applied, skipped, time.monotonic() - started, digest)


async def _seek(consumer: AIOKafkaConsumer, partitions: list[TopicPartition],
                ends: dict[TopicPartition, int], since: datetime | None) -> None:
    if since is None:
        await consumer.seek_to_beginning(*partitions)
        return
    found = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in partitions})
    for tp in partitions:
        consumer.seek(tp, found[tp].offset if found.get(tp) else ends[tp])


async def _apply(pool: asyncpg.Pool, spec: TopicSpec, record) -> bool | None:  # noqa: ANN001 - ConsumerRecord
    """``True`` if applied now, ``False`` if applied before, ``None`` if malformed (skipped)."""
    value = decode_value(spec.model, record.value)
    if isinstance(value, Malformed):
        return None
    try:
        envelope = open_envelope(value, record.headers, expected_type=spec.event_type)
    except EnvelopeError:
        return None
    async with pool.acquire() as conn:
        return await apply_event(conn, envelope, Origin(CLAIMED_AS, record.topic, record.partition, record.offset))


async def table_digest(conn: asyncpg.Connection | asyncpg.Pool) -> str:
    """sha256 of the pattern table, row by row in key order: equal digests, identical tables."""
    rows = await conn.fetch(
        "SELECT context, modifier, alpha_micros, beta_micros, observations, square_micros, updated_at FROM patterns"
        " ORDER BY context COLLATE \"C\", modifier COLLATE \"C\""
    )
    digest = hashlib.sha256()
    for r in rows:
        digest.update(
            f"{r['context']}\t{r['modifier']}\t{r['alpha_micros']}\t{r['beta_micros']}\t"
            f"{r['observations']}\t{r['square_micros']}\t{r['updated_at'].isoformat()}\n".encode()
        )
    return digest.hexdigest()
