"""The editor's state in PostgreSQL (``editor_takes``, ``editor_assemblies``, migration 010).

Shots of one scene finish in different partitions, possibly in different editor workers at
once: :func:`record_take` keeps a score and reads back its scene's under a per-scene advisory
lock, so whichever shot finishes last sees every other one, and the scene is cut exactly when
its last shot is final. An assembly is marked sent once the broker has its ``scene.assembled``
(:func:`mark_sent`); a redelivery before that sends the same event again.
"""

from __future__ import annotations

import asyncpg

from events.envelope import Envelope
from events.models import QualityScored

# The first key of the editor's per-scene advisory locks (the second is the scene id's hash).
EDITOR_LOCK = 730_211_410


async def record_take(pool: asyncpg.Pool, envelope: Envelope[QualityScored]) -> list[QualityScored]:
    """Keep the score's attempt (the first scoring of an attempt wins) and return every kept score
    of its scene, this one included."""
    scored = envelope.value
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", EDITOR_LOCK, scored.scene_id)
        await conn.execute(
            "INSERT INTO editor_takes (scene_id, shot_number, attempt, event_id, session_id, take)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            scored.scene_id, scored.shot.shot_number, scored.attempt, envelope.id, scored.session_id,
            scored.model_dump_json(),
        )
        rows = await conn.fetch("SELECT take FROM editor_takes WHERE scene_id = $1 ORDER BY shot_number, attempt",
                                scored.scene_id)
    return [QualityScored.model_validate_json(row["take"]) for row in rows]


async def scene_takes(pool: asyncpg.Pool, scene_id: str) -> list[QualityScored]:
    """Every score kept of the scene (none: the editor has seen none)."""
    rows = await pool.fetch("SELECT take FROM editor_takes WHERE scene_id = $1 ORDER BY shot_number, attempt", scene_id)
    return [QualityScored.model_validate_json(row["take"]) for row in rows]


async def was_answered(pool: asyncpg.Pool, request_id: str) -> bool:
    """Whether a ``scene.reassemble`` request was answered already (a redelivery, a replay)."""
    return bool(await pool.fetchval("SELECT true FROM editor_requests WHERE event_id = $1", request_id))


async def mark_answered(pool: asyncpg.Pool, request_id: str, scene_id: str) -> None:
    await pool.execute("INSERT INTO editor_requests (event_id, scene_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                       request_id, scene_id)


async def was_sent(pool: asyncpg.Pool, scene_id: str, inputs_sha256: str) -> bool:
    """Whether the broker has the assembly of these inputs already."""
    return bool(await pool.fetchval(
        "SELECT sent FROM editor_assemblies WHERE scene_id = $1 AND inputs_sha256 = $2", scene_id, inputs_sha256))


async def mark_sent(pool: asyncpg.Pool, scene_id: str, inputs_sha256: str, event_id: str) -> None:
    await pool.execute(
        "INSERT INTO editor_assemblies (scene_id, inputs_sha256, event_id, sent) VALUES ($1, $2, $3, true)"
        " ON CONFLICT (scene_id, inputs_sha256) DO UPDATE SET sent = true",
        scene_id, inputs_sha256, event_id,
    )
