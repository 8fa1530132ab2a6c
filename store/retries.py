"""The retry controller's state in PostgreSQL (``retry_decisions``, migration 009).

A score's follow-up is decided from the shot's earlier decided attempts (:func:`retry_state`,
a read: no commit) and recorded with :func:`record_decision` once the broker has the follow-up.
The row is the claim: one follow-up per attempt, however often the score is delivered, and a
score whose row is missing (a crash between the send and the write) is decided again, to the
same derived event id. A replay of decided scores into the same database sends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from director.escalation import BestAttempt
from events.envelope import Envelope
from events.models import QualityScored


@dataclass(frozen=True)
class RetryState:
    """What the controller knows of a score's shot before deciding it."""

    decided: bool  # this attempt has been decided (its follow-up is with the broker): send nothing
    best: BestAttempt | None  # the shot's best attempt among those decided so far


# One round trip: the attempt's own row, and the shot's best scored attempt so far.
_STATE = """
SELECT EXISTS (SELECT FROM retry_decisions WHERE scene_id = $1 AND shot_number = $2 AND attempt = $3) AS decided,
  best.attempt, best.composite, best.modifier
FROM (VALUES (1)) AS one (x)
  LEFT JOIN LATERAL (SELECT attempt, composite, modifier FROM retry_decisions
    WHERE scene_id = $1 AND shot_number = $2 AND ok ORDER BY composite DESC, attempt LIMIT 1) AS best ON true
"""

_RECORD = """
INSERT INTO retry_decisions (scene_id, shot_number, attempt, event_id, ok, composite, modifier)
VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING
"""


async def retry_state(conn: asyncpg.Connection | asyncpg.Pool, scored: QualityScored) -> RetryState:
    row = await conn.fetchrow(_STATE, *attempt_key(scored))
    best = BestAttempt(row["attempt"], row["composite"], row["modifier"]) if row["attempt"] is not None else None
    return RetryState(row["decided"], best)


async def record_decision(conn: asyncpg.Connection | asyncpg.Pool, envelope: Envelope[QualityScored]) -> None:
    """Record the score's attempt as decided; the first scoring of an attempt is the one kept."""
    scored = envelope.value
    await conn.execute(_RECORD, *attempt_key(scored), envelope.id, scored.status == "ok", scored.composite,
                       scored.prompt.modifier)


def attempt_key(scored: QualityScored) -> tuple[str, int, int]:
    # One follow-up per attempt, even if two scorings of the same attempt arrive under different ids.
    return scored.scene_id, scored.shot.shot_number, scored.attempt
