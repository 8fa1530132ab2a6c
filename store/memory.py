"""The memory in PostgreSQL (``memory``, migration 012): one row per scored attempt and embedder,
written by the learner's projection of ``quality.scored`` (:func:`remember`, idempotent by event
id), read back whole or from a sequence number on (:func:`load`), and checksummed like the pattern
table (:func:`memory_digest`), so a replay is seen to rebuild it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import asyncpg
import numpy as np

from director.memory import BUILT_IN, Embedder, attempt_text
from events.envelope import Envelope
from events.models import QualityScored


def embedder_key(embedder: Embedder) -> str:
    return f"{embedder.name}/{embedder.version}"


async def remember(conn: asyncpg.Connection | asyncpg.Pool, envelope: Envelope[QualityScored],
                   embedder: Embedder = BUILT_IN) -> None:
    """Remember a scored attempt (again: nothing changes)."""
    scored = envelope.value
    text = attempt_text(scored.shot, scored.prompt)
    [vector] = embedder.embed([text])
    frames = sorted(scored.frames, key=lambda frame: frame.index)
    await conn.execute(
        "INSERT INTO memory (event_id, embedder, scene_id, shot_number, attempt, text, vector, status, composite,"
        " passed, modifier, frame_uri, remembered_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)"
        " ON CONFLICT DO NOTHING",
        envelope.id, embedder_key(embedder), scored.scene_id, scored.shot.shot_number, scored.attempt, text,
        vector.tolist(), scored.status, scored.composite, scored.passed, scored.prompt.modifier,
        frames[len(frames) // 2].uri if frames else None, envelope.time,
    )


@dataclass
class Memories:
    """Rows of the memory, their vectors stacked (row i of ``vectors`` is ``rows[i]``)."""

    rows: list[dict]
    vectors: np.ndarray
    last_seq: int = 0

    def extend(self, rows: list[asyncpg.Record]) -> None:
        if not rows:
            return
        self.rows.extend({k: v for k, v in row.items() if k != "vector"} for row in rows)
        self.vectors = np.vstack([self.vectors, np.asarray([row["vector"] for row in rows], np.float32)])
        self.last_seq = rows[-1]["seq"]


async def load(conn: asyncpg.Connection | asyncpg.Pool, embedder: Embedder = BUILT_IN,
               into: Memories | None = None) -> Memories:
    """The embedder's memory, or what was added since ``into`` was loaded (added to it)."""
    memories = into or Memories([], np.zeros((0, embedder.dimensions), np.float32))
    rows = await conn.fetch(
        "SELECT seq, scene_id, shot_number, attempt, text, vector, status, composite, passed, modifier, frame_uri"
        " FROM memory WHERE embedder = $1 AND seq > $2 ORDER BY seq", embedder_key(embedder), memories.last_seq)
    memories.extend(rows)
    return memories


async def memory_digest(conn: asyncpg.Connection | asyncpg.Pool) -> str:
    """sha256 of the memory's contents in a fixed order (not of ``seq``, which counts inserts)."""
    digest = hashlib.sha256()
    for row in await conn.fetch(
            "SELECT event_id, embedder, scene_id, shot_number, attempt, text, vector, status, composite, passed,"
            " modifier, frame_uri, remembered_at FROM memory ORDER BY event_id, embedder"):
        digest.update(repr(tuple(row.values())).encode())
    return digest.hexdigest()
