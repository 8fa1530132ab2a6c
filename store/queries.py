"""Read queries over the projections (CLI, API, tests)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from director.learning import PatternTable, Posterior
from events.models import PromptSpec


async def posteriors_for(conn: asyncpg.Connection | asyncpg.Pool, context: str) -> dict[str, Posterior]:
    rows = await conn.fetch(
        "SELECT modifier, alpha_micros, beta_micros, observations FROM patterns WHERE context = $1",
        context,
    )
    return {r["modifier"]: Posterior(r["alpha_micros"], r["beta_micros"], r["observations"]) for r in rows}


async def pattern_table(conn: asyncpg.Connection | asyncpg.Pool) -> PatternTable:
    rows = await conn.fetch("SELECT context, modifier, alpha_micros, beta_micros, observations FROM patterns")
    return {
        (r["context"], r["modifier"]): Posterior(r["alpha_micros"], r["beta_micros"], r["observations"])
        for r in rows
    }


async def scene_report(conn: asyncpg.Connection | asyncpg.Pool, scene_id: str) -> dict[str, Any] | None:
    """A scene's plan, attempts, scores and the pattern updates it caused; ``None`` if unknown."""
    scene = await conn.fetchrow("SELECT * FROM scenes WHERE scene_id = $1", scene_id)
    if scene is None:
        return None
    shots = await conn.fetch("SELECT * FROM shots WHERE scene_id = $1 ORDER BY shot_number", scene_id)
    attempts = await conn.fetch(
        "SELECT a.*, s.status AS score_status, s.composite, s.passed, s.final, s.metrics, s.reason"
        " AS score_reason, (SELECT count(*) FROM frames f WHERE f.scene_id = a.scene_id AND"
        " f.shot_number = a.shot_number AND f.attempt = a.attempt) AS frame_count"
        " FROM attempts a LEFT JOIN scores s USING (scene_id, shot_number, attempt)"
        " WHERE a.scene_id = $1 ORDER BY a.shot_number, a.attempt",
        scene_id,
    )
    updates = await conn.fetch(
        "SELECT * FROM pattern_updates WHERE scene_id = $1 ORDER BY shot_number, attempt", scene_id
    )
    return {
        "scene": _plain(scene),
        "shots": [_plain(r) for r in shots],
        "attempts": [_plain(r) for r in attempts],
        "pattern_updates": [_plain(r) for r in updates],
    }


def _plain(row: asyncpg.Record) -> dict[str, Any]:
    result = {}
    for key, value in dict(row).items():
        if key in {"characters", "metrics"} and isinstance(value, str):
            value = json.loads(value)
        result[key] = value
    return result


async def decide_once(conn: asyncpg.Connection | asyncpg.Pool, planned_event_id: str, candidate: PromptSpec) -> PromptSpec:
    """The prompt decided for ``planned_event_id``: ``candidate`` the first time, the stored one after."""
    stored = await conn.fetchval(
        "WITH new AS (INSERT INTO refinements (planned_event_id, prompt) VALUES ($1, $2)"
        " ON CONFLICT DO NOTHING RETURNING prompt)"
        " SELECT prompt FROM new UNION ALL SELECT prompt FROM refinements WHERE planned_event_id = $1 LIMIT 1",
        planned_event_id, candidate.model_dump_json(),
    )
    return PromptSpec.model_validate_json(stored)
