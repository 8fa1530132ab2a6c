"""Regenerating one shot on a person's direction: the next attempt of that shot only, as a
``shot.planned`` with ``escalation="directed"``, through the normal refine, render and score path.

Shared by ``POST /api/director/scenes/{id}/shots/{n}/regenerate`` and ``tower regenerate``:
:func:`plan_regeneration` records the request (``regenerations``, migration 011) and returns the
event to publish; the caller publishes it and calls :func:`mark_published`. The event id derives
from the request (scene, shot, direction), so the same request twice is one attempt and one
render; a request whose first publish failed is published again under the same id.

The attempt is its shot's last: its budget is the attempt number itself, so it is final once
scored (no retries), and it is never credited to a pattern (a person chose it, not the policy).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import asyncpg

from events.envelope import Envelope, derive_event_id
from events.models import MAX_ATTEMPTS, Direction, ShotPlanned
from events.topics import SHOT_PLANNED

# The first key of the per-shot advisory lock that numbers regenerated attempts.
REGENERATION_LOCK = 730_211_411


class RegenerationRefused(LookupError):
    """No such scene or shot, or the shot cannot take another attempt; the message says which."""


@dataclass(frozen=True)
class Regeneration:
    envelope: Envelope[ShotPlanned]
    new: bool  # False: the same request was made before (same attempt, same event)
    published: bool  # the broker has the event already: nothing to send


async def plan_regeneration(pool: asyncpg.Pool, scene_id: str, shot_number: int, direction: Direction, *,
                            source: str) -> Regeneration:
    """The shot's next attempt under ``direction``, recorded once per distinct request."""
    request_id = hashlib.sha256(json.dumps(
        {"scene": scene_id, "shot": shot_number, "direction": direction.model_dump(mode="json")},
        sort_keys=True).encode()).hexdigest()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", REGENERATION_LOCK,
                           f"{scene_id}/{shot_number}")
        known = await conn.fetchrow("SELECT event_id, payload, published FROM regenerations WHERE request_id = $1",
                                    request_id)
        if known is not None:
            planned = ShotPlanned.model_validate_json(known["payload"])
            return Regeneration(_envelope(planned, known["event_id"], source), False, known["published"])
        latest = await conn.fetchrow(
            "SELECT e.payload FROM attempts a JOIN event_log e ON e.event_id = a.planned_event_id"
            " WHERE a.scene_id = $1 AND a.shot_number = $2 ORDER BY a.attempt DESC LIMIT 1", scene_id, shot_number)
        if latest is None:
            shots = await conn.fetchval("SELECT count(*) FROM shots WHERE scene_id = $1", scene_id)
            raise RegenerationRefused(f"scene {scene_id!r} has no shot {shot_number}"
                                      + (f" (it has {shots})" if shots else " (no such scene, or not planned yet)"))
        previous = ShotPlanned.model_validate_json(latest["payload"])
        attempt = 1 + max(previous.attempt, await conn.fetchval(
            "SELECT coalesce(max(attempt), 0) FROM regenerations WHERE scene_id = $1 AND shot_number = $2",
            scene_id, shot_number))
        if attempt > MAX_ATTEMPTS:
            raise RegenerationRefused(f"shot {shot_number} of scene {scene_id!r} has had {attempt - 1} attempts, "
                                      f"the most a shot can have ({MAX_ATTEMPTS})")
        kept = await conn.fetchval(
            "SELECT modifier FROM scores WHERE scene_id = $1 AND shot_number = $2 AND status = 'ok'"
            " ORDER BY coalesce(escalation = 'directed', false) DESC, passed DESC, composite DESC, attempt LIMIT 1",
            scene_id, shot_number)
        planned = previous.model_copy(update={
            "attempt": attempt, "max_attempts": attempt, "escalation": "directed", "direction": direction,
            "keep_modifier": kept or previous.keep_modifier,
            "retry_reason": f"a person asked: {direction.note}" if direction.note else "a person asked for another take",
        })
        planned = ShotPlanned.model_validate(planned.model_dump())
        event_id = derive_event_id(f"regenerate/{request_id}", SHOT_PLANNED.event_type)
        await conn.execute(
            "INSERT INTO regenerations (request_id, scene_id, shot_number, attempt, event_id, payload)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            request_id, scene_id, shot_number, attempt, event_id, planned.model_dump_json())
    return Regeneration(_envelope(planned, event_id, source), True, False)


async def mark_published(pool: asyncpg.Pool, event_id: str) -> None:
    await pool.execute("UPDATE regenerations SET published = true WHERE event_id = $1", event_id)


def _envelope(planned: ShotPlanned, event_id: str, source: str) -> Envelope[ShotPlanned]:
    return Envelope(id=event_id, source=source, type=SHOT_PLANNED.event_type, scene_id=planned.scene_id,
                    session_id=planned.session_id, value=planned)
