"""The memory in PostgreSQL (``memory``, migrations 012-014): one row per scored attempt and
embedder, written by the learner's projection of ``quality.scored`` (:func:`remember`, idempotent by
event id, with the built-in embedder, so a replay rebuilds it and :func:`memory_digest` shows it),
and by :func:`embed_missing` for a server embedder, from the texts already remembered. Readers load
one embedder's rows whole or from a sequence number on (:func:`load`) into :class:`Memories`, which
keeps an approximate nearest-neighbour index of them in step (:class:`director.vector_index.VectorIndex`)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

import asyncpg
import httpx
import numpy as np

from director.embedding_server import ServerEmbedder
from director.escalation import credited
from director.learning import context_parts
from director.memory import BUILT_IN, Embedder, Hit, Remembered, attempt_text, embedder_key
from director.vector_index import VectorIndex
from events.envelope import Envelope
from events.models import QualityScored
from foundation.settings import Settings
from scoring.signature import DIMENSIONS as SIGNATURE_DIMENSIONS

BUILT_IN_KEY = embedder_key(BUILT_IN)
_COLUMNS = ("scene_id, shot_number, attempt, text, status, composite, passed, modifier, frame_uri, remembered_at,"
            " workflow, credited, signature")


async def remember(conn: asyncpg.Connection | asyncpg.Pool, envelope: Envelope[QualityScored]) -> None:
    """Remember a scored attempt with the built-in embedder (again: nothing changes)."""
    scored = envelope.value
    text = attempt_text(scored.shot, scored.prompt)
    [vector] = BUILT_IN.vectors([text])
    frames = sorted(scored.frames, key=lambda frame: frame.index)
    await conn.execute(
        f"INSERT INTO memory (event_id, embedder, vector, {_COLUMNS})"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16) ON CONFLICT DO NOTHING",
        envelope.id, BUILT_IN_KEY, vector.tolist(), scored.scene_id, scored.shot.shot_number, scored.attempt, text,
        scored.status, scored.composite, scored.passed, scored.prompt.modifier,
        frames[len(frames) // 2].uri if frames else None, envelope.time,
        context_parts(scored.prompt.context)["workflow"], credited(scored), scored.signature,
    )


async def embed_missing(conn: asyncpg.Connection | asyncpg.Pool, embedder: Embedder, *, batch: int = 64,
                        progress: Callable[[int, int], None] | None = None) -> int:
    """Give ``embedder`` a row for every remembered attempt it has none for, from the built-in
    rows' texts (the log's projection), oldest first, ``batch`` texts per call to the embedder;
    ``progress(done, total)`` after each batch. Returns how many rows it added. Safe to run
    concurrently and again: a row already there is left as it is."""
    key = embedder_key(embedder)
    if key == BUILT_IN_KEY:
        return 0
    missing = ("FROM memory b WHERE b.embedder = $1 AND NOT EXISTS "
               "(SELECT 1 FROM memory m WHERE m.event_id = b.event_id AND m.embedder = $2)")
    total = await conn.fetchval(f"SELECT count(*) {missing}", BUILT_IN_KEY, key)
    done, after = 0, 0
    while done < total:
        rows = await conn.fetch(f"SELECT b.seq, b.event_id, {_COLUMNS} {missing} AND b.seq > $3 ORDER BY b.seq LIMIT $4",
                                BUILT_IN_KEY, key, after, batch)
        if not rows:
            break
        vectors = await embedder.embed([row["text"] for row in rows])
        await conn.executemany(
            f"INSERT INTO memory (event_id, embedder, vector, {_COLUMNS})"
            " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16) ON CONFLICT DO NOTHING",
            [(row["event_id"], key, vector.tolist(), *(row[c.strip()] for c in _COLUMNS.split(",")))
             for row, vector in zip(rows, vectors, strict=True)])
        done, after = done + len(rows), rows[-1]["seq"]
        if progress is not None:
            progress(done, total)
    return done


class Memories:
    """One embedder's rows of the memory (``rows[i]`` is row i of ``vectors`` and ``looks``), with
    what searches need kept in step as rows are added: an index of all of them, the rows of each
    shot, and the rows the memory prior may use per workflow, each with its own index."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.last_seq = 0
        self.index: VectorIndex | None = None
        self.shots: dict[tuple[str, int], list[int]] = {}
        self.priors: dict[str, tuple[list[int], VectorIndex]] = {}
        # Room to grow, doubled when full: a refresh appends without copying the whole matrix.
        self._vectors = np.zeros((0, 0), np.float32)
        self._looks = np.zeros((0, SIGNATURE_DIMENSIONS), np.float32)

    @property
    def vectors(self) -> np.ndarray:
        """The rows' embeddings (a view)."""
        return self._vectors[:len(self.rows)]

    @property
    def looks(self) -> np.ndarray:
        """The rows' image signatures (a view); a row without one (no frames, or scored before
        signatures) is all zeros: like nothing."""
        return self._looks[:len(self.rows)]

    def extend(self, rows: list[asyncpg.Record]) -> None:
        if not rows:
            return
        start = len(self.rows)
        added = np.asarray([row["vector"] for row in rows], np.float32)
        looks = np.zeros((len(rows), SIGNATURE_DIMENSIONS), np.float32)
        for i, row in enumerate(rows):
            if row["signature"] and len(row["signature"]) == SIGNATURE_DIMENSIONS:
                looks[i] = row["signature"]
        self._vectors = _appended(self._vectors, start, added)
        self._looks = _appended(self._looks, start, looks)
        self.rows.extend({k: v for k, v in row.items() if k != "vector"} for row in rows)
        self.last_seq = rows[-1]["seq"]
        if self.index is None:
            self.index = VectorIndex(added.shape[1])
        self.index.add(added)
        eligible: dict[str, list[int]] = {}
        for i, row in enumerate(self.rows[start:], start):
            self.shots.setdefault((row["scene_id"], row["shot_number"]), []).append(i)
            if row["workflow"] is not None and row["credited"] and row["status"] == "ok":
                eligible.setdefault(row["workflow"], []).append(i)
        for workflow, new in eligible.items():
            members, index = self.priors.setdefault(workflow, ([], VectorIndex(added.shape[1])))
            members.extend(new)
            index.add(self._vectors[new])

    def search(self, query: np.ndarray, k: int, exclude: list[int] = ()) -> list[Hit]:
        """The ``k`` rows most like ``query``, best first, without the rows in ``exclude``: the
        index finds them, and their similarity is the exact dot product of the stored vectors."""
        if self.index is None:
            return []
        return self.ranked([hit.index for hit in self.index.search(query, k, exclude)], query)

    def ranked(self, rows: list[int], query: np.ndarray) -> list[Hit]:
        """``rows`` best first by their exact similarity to ``query``."""
        similarities = self.vectors[rows] @ query.astype(np.float32) if rows else np.zeros(0)
        return sorted((Hit(row, float(similarity)) for row, similarity in zip(rows, similarities, strict=True)),
                      key=lambda hit: (-hit.similarity, hit.index))

    def looks_like(self, row: int, k: int, exclude: list[int]) -> list[Hit]:
        """The ``k`` rows whose middle frame looks most like ``row``'s, without ``exclude`` and rows
        with no signature; none if ``row`` has none. An exact scan: a signature is 80 numbers."""
        query = self.looks[row]
        if not query.any():
            return []
        scores = self.looks @ query
        scores[~self.looks.any(axis=1)] = -np.inf
        scores[list(exclude)] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        if k <= 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((top, -scores[top]))]  # best first; ties by row
        return [Hit(int(i), float(scores[i])) for i in top]


def _appended(buffer: np.ndarray, used: int, added: np.ndarray) -> np.ndarray:
    """``buffer`` with ``added`` written after its first ``used`` rows; a new buffer of twice the
    size (or what is needed) when it is full."""
    needed = used + len(added)
    if needed > len(buffer) or buffer.shape[1] != added.shape[1]:
        grown = np.zeros((max(needed, 2 * len(buffer)), added.shape[1]), buffer.dtype)
        if used:
            grown[:used] = buffer[:used]
        buffer = grown
    buffer[used:needed] = added
    return buffer


async def load(conn: asyncpg.Connection | asyncpg.Pool, key: str = BUILT_IN_KEY, into: Memories | None = None) -> Memories:
    """The rows of the embedder ``key``, or those added since ``into`` was loaded (added to it)."""
    memories = into or Memories()
    rows = await conn.fetch(f"SELECT seq, vector, {_COLUMNS} FROM memory WHERE embedder = $1 AND seq > $2 ORDER BY seq",
                            key, memories.last_seq)
    # In a thread: indexing a large memory (minutes at a million rows) must not stop the event loop.
    await asyncio.to_thread(memories.extend, rows)
    return memories


async def feedback_of(conn: asyncpg.Connection | asyncpg.Pool,
                      attempts: list[tuple[str, int, int]]) -> dict[tuple[str, int, int], dict]:
    """What people said of these attempts (``(scene_id, shot_number, attempt)``): how many
    feedback events, their mean rating (``None`` when none carried one) and the latest comment.
    Read at search time, as feedback arrives after the attempt is remembered."""
    if not attempts:
        return {}
    scenes, shots, numbers = (list(column) for column in zip(*attempts, strict=True))
    rows = await conn.fetch(
        "SELECT f.scene_id, f.shot_number, f.attempt, count(*) AS count, avg(f.rating)::float8 AS mean_rating,"
        " (array_agg(f.comment ORDER BY f.submitted_at DESC) FILTER (WHERE f.comment IS NOT NULL))[1] AS comment"
        " FROM feedback f JOIN unnest($1::text[], $2::int[], $3::int[]) AS a(scene_id, shot_number, attempt)"
        " USING (scene_id, shot_number, attempt) GROUP BY 1, 2, 3", scenes, shots, numbers)
    return {(row["scene_id"], row["shot_number"], row["attempt"]):
            {"count": row["count"], "mean_rating": row["mean_rating"], "comment": row["comment"]} for row in rows}


async def memory_digest(conn: asyncpg.Connection | asyncpg.Pool) -> str:
    """sha256 of the memory's contents in a fixed order (not of ``seq``, which counts inserts)."""
    digest = hashlib.sha256()
    for row in await conn.fetch(f"SELECT event_id, embedder, vector, {_COLUMNS} FROM memory ORDER BY event_id, embedder"):
        digest.update(repr(tuple(row.values())).encode())
    return digest.hexdigest()


def neighbours(memories: Memories, query: np.ndarray, *, workflow: str, k: int,
               exclude_shot: tuple[str, int] | None = None) -> list[tuple[float, Remembered]]:
    """The ``k`` remembered outcomes most like ``query`` that the memory prior may use: scored, of
    ``workflow``, credited to their modifier, and not of the shot being decided (its own attempts
    are already its context's own evidence)."""
    if workflow not in memories.priors:
        return []
    members, index = memories.priors[workflow]
    own = set(memories.shots.get(exclude_shot, ())) if exclude_shot is not None else set()
    skip = [p for p, i in enumerate(members) if i in own] if own else []
    found = memories.ranked([members[hit.index] for hit in index.search(query, k, skip)], query)
    return [(hit.similarity, Remembered(memories.rows[hit.index]["modifier"], memories.rows[hit.index]["composite"]))
            for hit in found]


async def configured_embedder(settings: Settings, client: httpx.AsyncClient | None = None) -> Embedder:
    """The embedder ``TOWER_MEMORY_EMBEDDER`` names, ready to use (a server one fingerprinted).
    Raises :class:`director.embedding_server.EmbedderUnavailable` if the server cannot be used."""
    if settings.memory_embedder == "built-in":
        return BUILT_IN
    key = settings.embeddings_api_key
    return await ServerEmbedder(settings.embeddings_url, settings.embeddings_model,
                                client or httpx.AsyncClient(timeout=settings.embeddings_timeout_s),
                                key.get_secret_value() if key else None).open()


class MemoryCache:
    """A process's copy of one embedder's memory, brought up to date incrementally (rows since the
    last load) before each use; one refresh at a time, so concurrent users never add rows twice."""

    def __init__(self, embedder: Embedder = BUILT_IN) -> None:
        self.embedder = embedder
        self._memories: Memories | None = None
        self._lock = asyncio.Lock()

    async def current(self, conn: asyncpg.Connection | asyncpg.Pool) -> Memories:
        async with self._lock:
            self._memories = await load(conn, embedder_key(self.embedder), into=self._memories)
            return self._memories
