"""The memory in PostgreSQL (``memory``, migration 012): one row per scored attempt and embedder,
written by the learner's projection of ``quality.scored`` (:func:`remember`, idempotent by event
id), read back whole or from a sequence number on (:func:`load`), and checksummed like the pattern
table (:func:`memory_digest`), so a replay is seen to rebuild it."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

import asyncpg
import numpy as np

from director.escalation import credited
from director.learning import context_parts
from director.memory import BUILT_IN, Embedder, Remembered, attempt_text, nearest
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
        " passed, modifier, frame_uri, remembered_at, workflow, credited)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15) ON CONFLICT DO NOTHING",
        envelope.id, embedder_key(embedder), scored.scene_id, scored.shot.shot_number, scored.attempt, text,
        vector.tolist(), scored.status, scored.composite, scored.passed, scored.prompt.modifier,
        frames[len(frames) // 2].uri if frames else None, envelope.time,
        context_parts(scored.prompt.context)["workflow"], credited(scored),
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
        "SELECT seq, scene_id, shot_number, attempt, text, vector, status, composite, passed, modifier, frame_uri,"
        " workflow, credited FROM memory WHERE embedder = $1 AND seq > $2 ORDER BY seq", embedder_key(embedder), memories.last_seq)
    memories.extend(rows)
    return memories


async def memory_digest(conn: asyncpg.Connection | asyncpg.Pool) -> str:
    """sha256 of the memory's contents in a fixed order (not of ``seq``, which counts inserts)."""
    digest = hashlib.sha256()
    for row in await conn.fetch(
            "SELECT event_id, embedder, scene_id, shot_number, attempt, text, vector, status, composite, passed,"
            " modifier, frame_uri, remembered_at, workflow, credited FROM memory ORDER BY event_id, embedder"):
        digest.update(repr(tuple(row.values())).encode())
    return digest.hexdigest()


def neighbours(memories: Memories, query: np.ndarray, *, workflow: str, k: int,
               exclude_shot: tuple[str, int] | None = None) -> list[tuple[float, Remembered]]:
    """The ``k`` remembered outcomes most like ``query`` that the memory prior may use: scored, of
    ``workflow``, credited to their modifier, and not of the shot being decided (its own attempts
    are already its context's own evidence)."""
    eligible = [i for i, row in enumerate(memories.rows)
                if row["workflow"] == workflow and row["credited"] and row["status"] == "ok"
                and (row["scene_id"], row["shot_number"]) != exclude_shot]
    if not eligible:
        return []
    hits = nearest(memories.vectors[eligible], query, k)
    return [(hit.similarity, Remembered(memories.rows[eligible[hit.index]]["modifier"],
                                        memories.rows[eligible[hit.index]]["composite"])) for hit in hits]


class MemoryCache:
    """A process's copy of the memory, brought up to date incrementally (rows since the last load)
    before each use; one refresh at a time, so concurrent users never add the same rows twice."""

    def __init__(self, embedder: Embedder = BUILT_IN) -> None:
        self.embedder = embedder
        self._memories: Memories | None = None
        self._lock = asyncio.Lock()

    async def current(self, conn: asyncpg.Connection | asyncpg.Pool) -> Memories:
        async with self._lock:
            self._memories = await load(conn, self.embedder, into=self._memories)
            return self._memories
