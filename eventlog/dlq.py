"""Dead letters: reading them, and re-publishing ("redriving") them to their original topic once
their cause is fixed."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from aiokafka.structs import ConsumerRecord

from events.envelope import header_map, scene_of_key
from events.topics import dead_letter_topic
from foundation.kafka import read_topic
from foundation.publisher import Publisher
from foundation.settings import Settings

REDRIVEN_HEADER = "tower_redriven_from"


@dataclass(frozen=True)
class Letter:
    """One dead letter and where its original came from."""

    record: ConsumerRecord
    headers: dict[str, str]

    @property
    def origin(self) -> tuple[str, int, int]:
        h = self.headers
        return h.get("dlq_original_topic", ""), int(h.get("dlq_original_partition", -1)), int(h.get("dlq_original_offset", -1))

    @property
    def why_not_redrivable(self) -> str | None:
        if self.headers.get("dlq_truncated"):
            return f"its value was truncated ({self.headers.get('dlq_original_size')} bytes originally)"
        if self.headers.get("dlq_value_dropped"):
            return f"its value was dropped ({self.headers['dlq_value_dropped']})"
        if not self.headers.get("dlq_original_topic"):
            return "it does not say which topic it came from"
        return None


async def read_letters(settings: Settings, topic: str) -> list[Letter]:
    """The dead letters of pipeline topic ``topic`` (unprefixed name), oldest first."""
    records = await read_topic(settings.kafka_bootstrap, dead_letter_topic(settings.topic(topic)), timeout_s=5)
    return [Letter(r, header_map(r.headers)) for r in records]


def select(letters: list[Letter], *, ids: set[str], offsets: set[int]) -> list[Letter]:
    """The letters asked for (by ``ce_id`` or dead-letter offset; all if neither is given), one per
    original message: a message two stages dead-lettered (its owner and the learner) goes back once."""
    chosen, seen = [], set()
    for letter in letters:
        wanted = (not ids and not offsets) or letter.headers.get("ce_id") in ids or letter.record.offset in offsets
        if wanted and letter.origin not in seen:
            seen.add(letter.origin)
            chosen.append(letter)
    return chosen


async def redrive(settings: Settings, letters: list[Letter]) -> list[tuple[Letter, str]]:
    """Re-publish ``letters`` to their original topics with their original key, value and headers
    (``dlq_*`` removed, ``tower_redriven_from`` added), and clear the scene failures they caused.
    Returns each letter with what happened to it."""
    outcomes: list[tuple[Letter, str]] = []
    async with Publisher(settings, client_id="tower-dlq") as publisher:
        for letter in letters:
            if (why := letter.why_not_redrivable) is not None:
                outcomes.append((letter, f"skipped: {why}"))
                continue
            record = letter.record
            headers = [(k, v) for k, v in record.headers if not k.startswith("dlq_") and k != REDRIVEN_HEADER]
            headers.append((REDRIVEN_HEADER, f"{record.topic}@{record.offset}".encode()))
            sent = await publisher.publish_raw(letter.origin[0], record.value, key=record.key, headers=headers)
            outcomes.append((letter, f"redriven to {sent.topic}[{sent.partition}]@{sent.offset}"))
    redriven = [letter for letter, outcome in outcomes if outcome.startswith("redriven")]
    if redriven:
        # An upsert: the learner may not have recorded the failure yet, and must not record it
        # as open after this.
        conn = await asyncpg.connect(settings.database_url)
        try:
            await conn.executemany(
                "INSERT INTO scene_failures (original_topic, original_partition, original_offset, scene_id, event_id,"
                " consumer, error_class, reason, failed_at, redriven_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), now())"
                " ON CONFLICT (original_topic, original_partition, original_offset) DO UPDATE SET redriven_at = now()",
                [(*letter.origin, scene_of_key(letter.record.key), letter.headers.get("ce_id"),
                  letter.headers.get("dlq_consumer", "?"), letter.headers.get("dlq_error_class", "?"),
                  letter.headers.get("dlq_error_message", "")) for letter in redriven],
            )
        finally:
            await conn.close()
    return outcomes
