"""Read queries over the projections (CLI, API, tests)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from director.context import SEPARATOR, escape_label
from director.evaluation import LoggedDecision
from director.learning import (
    PRIOR_MICROS,
    EvidenceSums,
    LearningParameters,
    PatternTable,
    Posterior,
    beliefs,
    context_parts,
)
from events.models import PromptSpec


async def evidence_near(
    conn: asyncpg.Connection | asyncpg.Pool, context: str, *, now: datetime, half_life_s: float | None
) -> EvidenceSums:
    """The evidence of every context with ``context``'s workflow (the candidates to lend it a
    prior, and itself), as weighted sums; discounted by age when ``half_life_s`` is set."""
    # A prefilter: the key ends with the workflow as keys write it; related() then compares exactly.
    ending = SEPARATOR + escape_label(context_parts(context)["workflow"])
    suffix = "%" + ending.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    if half_life_s is None:  # the exact table: one small read
        rows = await conn.fetch(
            "SELECT context, modifier, (alpha_micros - $2)::float8 / $2 AS good, (beta_micros - $2)::float8 / $2 AS bad,"
            " square_micros::float8 / $2 AS square FROM patterns WHERE context LIKE $1",
            suffix, PRIOR_MICROS,
        )
    else:
        rows = await conn.fetch(
            "SELECT context, modifier, sum(weight * reward * d) AS good, sum(weight * (1 - reward) * d) AS bad,"
            " sum(weight * reward * reward * d) AS square FROM (SELECT context, modifier, weight, reward,"
            "   power(0.5, greatest(0, extract(epoch FROM ($2::timestamptz - coalesce(updated_at, $2)))) / $3) AS d"
            "   FROM pattern_updates WHERE context LIKE $1) u GROUP BY context, modifier",
            suffix, now, half_life_s,
        )
    return {(r["context"], r["modifier"]): (r["good"], r["bad"], r["square"]) for r in rows}


async def decision_posteriors(
    conn: asyncpg.Connection | asyncpg.Pool, context: str, modifiers: Sequence[str], *, now: datetime,
    learning: LearningParameters, memory: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, Posterior]:
    """What the refiner samples from in ``context``: each modifier's :func:`~director.learning.beliefs`
    (with the memory prior, if given)."""
    evidence = await evidence_near(conn, context, now=now, half_life_s=learning.half_life_s)
    known = beliefs(context, evidence, modifiers, learning, memory)
    return {modifier: belief.posterior() for modifier, belief in known.items()}


async def character_sheets_for(conn: asyncpg.Connection | asyncpg.Pool, names: Sequence[str]) -> dict[str, str]:
    """Remembered designs of these characters, by lower-cased name."""
    if not names:
        return {}
    rows = await conn.fetch("SELECT name_key, sheet FROM character_sheets WHERE name_key = ANY($1::text[])",
                            [name.lower() for name in names])
    return {r["name_key"]: r["sheet"] for r in rows}


async def pattern_table(conn: asyncpg.Connection | asyncpg.Pool) -> PatternTable:
    rows = await conn.fetch("SELECT context, modifier, alpha_micros, beta_micros, observations, square_micros FROM patterns")
    return {
        (r["context"], r["modifier"]): Posterior(r["alpha_micros"], r["beta_micros"], r["observations"], r["square_micros"])
        for r in rows
    }


async def logged_first_attempts(
    conn: asyncpg.Connection | asyncpg.Pool, *, context: str | None = None, since: datetime | None = None
) -> list[LoggedDecision]:
    """Every scored first attempt, in the order scored: the data ``tower evaluate`` reweights."""
    rows = await conn.fetch(
        "SELECT a.context, a.modifier, a.modifier_probability, s.composite FROM scores s"
        " JOIN attempts a USING (scene_id, shot_number, attempt)"
        " WHERE s.attempt = 1 AND s.status = 'ok' AND coalesce(s.escalation, 'initial') = 'initial'"
        " AND a.modifier_probability IS NOT NULL"
        " AND ($1::text IS NULL OR strpos(a.context, $1) > 0) AND ($2::timestamptz IS NULL OR s.scored_at >= $2)"
        " ORDER BY s.scored_at, s.event_id",
        context, since,
    )
    return [LoggedDecision(r["context"], r["modifier"], r["modifier_probability"], r["composite"]) for r in rows]


async def scene_report(conn: asyncpg.Connection | asyncpg.Pool, scene_id: str) -> dict[str, Any] | None:
    """A scene's plan, attempts, scores, the pattern updates it caused and its dead-lettered
    events; ``None`` if nothing is known of it (``scene`` is ``None`` when only failures are)."""
    scene = await conn.fetchrow("SELECT * FROM scenes WHERE scene_id = $1", scene_id)
    failures = await conn.fetch(
        "SELECT * FROM scene_failures WHERE scene_id = $1 AND redriven_at IS NULL ORDER BY failed_at", scene_id
    )
    if scene is None:
        return {"scene": None, "shots": [], "attempts": [], "pattern_updates": [],
                "failures": [dict(f) for f in failures]} if failures else None
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
        "failures": [dict(f) for f in failures],
        "assembly": await scene_assembly(conn, scene_id),
    }


def _plain(row: asyncpg.Record) -> dict[str, Any]:
    result = {}
    for key, value in dict(row).items():
        if key in {"characters", "metrics", "scores", "sources", "spec"} and isinstance(value, str):
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


# A scene's state, from its projections (see scene_state).
SCENE_STATES = ("requested", "running", "complete", "needs_review", "failed")


def scene_state(shot_count: int | None, final_shots: int, passed_shots: int, failures: int = 0) -> str:
    """``failed`` (an event of the scene was dead-lettered: it cannot finish), ``requested`` (not
    planned yet), ``running``, ``complete`` (every shot accepted above its threshold) or
    ``needs_review`` (every shot final, some only because its budget ran out)."""
    if failures:
        return "failed"
    if not shot_count:
        return "requested"
    if final_shots < shot_count:
        return "running"
    return "complete" if passed_shots >= shot_count else "needs_review"


_SCENE_SUMMARY = """
    SELECT sc.scene_id, sc.session_id, sc.description, sc.characters, sc.style, sc.requested_at, sc.batch_id,
           (SELECT max(shot_count) FROM shots sh WHERE sh.scene_id = sc.scene_id) AS shot_count,
           (SELECT count(DISTINCT shot_number) FROM scores s WHERE s.scene_id = sc.scene_id AND s.final) AS final_shots,
           (SELECT count(DISTINCT shot_number) FROM scores s WHERE s.scene_id = sc.scene_id AND s.passed) AS passed_shots,
           (SELECT avg(best) FROM (SELECT max(composite) AS best FROM scores s
                WHERE s.scene_id = sc.scene_id AND s.status = 'ok' GROUP BY shot_number) b) AS mean_best_score,
           (SELECT count(*) FROM scene_failures f WHERE f.scene_id = sc.scene_id AND f.redriven_at IS NULL) AS failures
    FROM scenes sc
"""


def _summary(row: asyncpg.Record) -> dict[str, Any]:
    summary = _plain(row)
    summary["status"] = scene_state(row["shot_count"], row["final_shots"], row["passed_shots"], row["failures"])
    return summary


async def sessions(conn: asyncpg.Connection | asyncpg.Pool, *, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
    total = await conn.fetchval("SELECT count(*) FROM sessions")
    rows = await conn.fetch(
        "SELECT session_id, created_at, scene_count FROM sessions ORDER BY created_at DESC, session_id"
        " LIMIT $1 OFFSET $2",
        limit, offset,
    )
    return total, [dict(r) for r in rows]


async def session_history(conn: asyncpg.Connection | asyncpg.Pool, session_id: str) -> dict[str, Any] | None:
    """A session and its scenes, oldest first, each with its state; ``None`` if unknown."""
    session = await conn.fetchrow("SELECT session_id, created_at, scene_count FROM sessions WHERE session_id = $1",
                                  session_id)
    if session is None:
        return None
    rows = await conn.fetch(_SCENE_SUMMARY + " WHERE sc.session_id = $1 ORDER BY sc.requested_at, sc.scene_id",
                            session_id)
    return {**dict(session), "scenes": [_summary(r) for r in rows]}


async def batch_progress(conn: asyncpg.Connection | asyncpg.Pool, batch_id: str) -> dict[str, Any] | None:
    """A batch: its size and each projected scene's state; scenes not projected yet count as queued."""
    batch = await conn.fetchrow("SELECT batch_id, size, created_at FROM batches WHERE batch_id = $1", batch_id)
    if batch is None:
        return None
    rows = await conn.fetch(_SCENE_SUMMARY + " WHERE sc.batch_id = $1 ORDER BY sc.requested_at, sc.scene_id",
                            batch_id)
    scenes = [_summary(r) for r in rows]
    counts = {state: sum(1 for s in scenes if s["status"] == state) for state in SCENE_STATES}
    return {
        **dict(batch),
        "queued": max(0, batch["size"] - len(scenes)) + counts["requested"],
        "running": counts["running"],
        "done": counts["complete"] + counts["needs_review"] + counts["failed"],
        "needs_review": counts["needs_review"],
        "failed": counts["failed"],
        "scenes": scenes,
    }


async def scene_detail(conn: asyncpg.Connection | asyncpg.Pool, scene_id: str) -> dict[str, Any] | None:
    """Everything known about a scene: the request, its state, the plan with each shot's attempts
    (prompt, render, frames, score, why it was retried), the accepted attempt and feedback."""
    row = await conn.fetchrow(_SCENE_SUMMARY + " WHERE sc.scene_id = $1", scene_id)
    if row is None:
        return None
    scene = _summary(row)
    shots = await conn.fetch(
        "SELECT sh.*, (e.payload->>'quality_threshold')::float AS quality_threshold,"
        " (e.payload->>'max_attempts')::int AS max_attempts, e.payload->'shot' AS spec"
        " FROM shots sh LEFT JOIN event_log e ON e.event_id = sh.event_id"
        " WHERE sh.scene_id = $1 ORDER BY sh.shot_number",
        scene_id,
    )
    attempts = await conn.fetch(
        "SELECT a.*, s.status AS score_status, s.composite, s.passed, s.final, s.metrics, s.reason AS score_reason,"
        " s.scorer_version, s.device, s.scored_at FROM attempts a LEFT JOIN scores s USING (scene_id, shot_number, attempt)"
        " WHERE a.scene_id = $1 ORDER BY a.shot_number, a.attempt",
        scene_id,
    )
    frames = await conn.fetch(
        "SELECT shot_number, attempt, frame_index, uri, width, height FROM frames WHERE scene_id = $1"
        " ORDER BY shot_number, attempt, frame_index",
        scene_id,
    )
    feedback = await conn.fetch(
        "SELECT feedback_id, shot_number, attempt, source, rating, comment, scores, reward, submitted_at"
        " FROM feedback WHERE scene_id = $1 ORDER BY submitted_at, event_id",
        scene_id,
    )
    failures = await conn.fetch(
        "SELECT original_topic, original_partition, original_offset, event_id, consumer, error_class, reason, failed_at"
        " FROM scene_failures WHERE scene_id = $1 AND redriven_at IS NULL ORDER BY failed_at", scene_id,
    )
    frames_of: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for f in frames:
        frames_of.setdefault((f["shot_number"], f["attempt"]), []).append(dict(f))
    attempts_of: dict[int, list[dict[str, Any]]] = {}
    for a in attempts:
        attempts_of.setdefault(a["shot_number"], []).append(_plain(a))

    plan = []
    for sh in shots:
        shot = _plain(sh)
        threshold = shot.pop("quality_threshold")
        shot["quality_threshold"] = threshold
        shot["attempts"] = []
        previous: dict[str, Any] | None = None
        for attempt in attempts_of.get(sh["shot_number"], []):
            attempt["frames"] = frames_of.get((sh["shot_number"], attempt["attempt"]), [])
            if attempt["attempt"] > 1 and not attempt["retry_reason"]:  # logged before retries said why
                attempt["retry_reason"] = _retry_reason(previous, threshold)
            shot["attempts"].append(attempt)
            previous = attempt
        scored = [a for a in shot["attempts"] if a["score_status"] == "ok"]
        finished = any(a["final"] for a in shot["attempts"])
        # As the editor cuts it: the latest regeneration a person asked for, else the best score.
        directed = [a for a in scored if a.get("escalation") == "directed"]
        best = (max(directed, key=lambda a: a["attempt"]) if directed
                else max(scored, key=lambda a: (a["composite"], -a["attempt"]))) if scored and finished else None
        shot["accepted_attempt"] = best["attempt"] if best else None
        shot["needs_review"] = finished and not any(a["passed"] for a in shot["attempts"])
        plan.append(shot)
    return {"scene": scene, "shots": plan, "feedback": [_plain(f) for f in feedback],
            "failures": [dict(f) for f in failures], "assembly": await scene_assembly(conn, scene_id)}


async def scene_assembly(conn: asyncpg.Connection | asyncpg.Pool, scene_id: str) -> dict[str, Any] | None:
    """The scene's latest ``scene.assembled`` (its value, with the event's id and time), if any."""
    row = await conn.fetchrow("SELECT event_id, assembled_at, payload FROM scene_assemblies WHERE scene_id = $1",
                              scene_id)
    if row is None:
        return None
    payload = row["payload"]
    return {**(json.loads(payload) if isinstance(payload, str) else payload), "event_id": row["event_id"],
            "assembled_at": row["assembled_at"]}


def _retry_reason(previous: dict[str, Any] | None, threshold: float | None) -> str:
    if previous is None or previous["score_status"] is None:
        return "the previous attempt was retried"
    if previous["score_status"] != "ok":
        return f"attempt {previous['attempt']} failed: {previous['score_reason'] or previous['render_reason']}"
    under = f" under the threshold {threshold:.2f}" if threshold is not None else " under the threshold"
    return f"attempt {previous['attempt']} scored {previous['composite']:.3f}{under}"


async def attempt_pattern(
    conn: asyncpg.Connection | asyncpg.Pool, scene_id: str, shot_number: int, attempt: int | None
) -> asyncpg.Record | None:
    """The attempt feedback is about (``None``: the shot's best scored attempt, else its latest),
    with its pattern context and modifier; ``None`` if there is no such attempt."""
    return await conn.fetchrow(
        "SELECT a.scene_id, a.shot_number, a.attempt, a.context, a.modifier, sc.session_id"
        " FROM attempts a JOIN scenes sc USING (scene_id) LEFT JOIN scores s USING (scene_id, shot_number, attempt)"
        " WHERE a.scene_id = $1 AND a.shot_number = $2 AND ($3::int IS NULL OR a.attempt = $3)"
        " ORDER BY (s.status = 'ok') DESC NULLS LAST, s.composite DESC NULLS LAST, a.attempt DESC LIMIT 1",
        scene_id, shot_number, attempt,
    )


async def judged_scene(
    conn: asyncpg.Connection | asyncpg.Pool, *, scene_id: str | None, session_id: str | None
) -> asyncpg.Record | None:
    """The scene feedback is about (``scene_id`` and ``session_id``): ``scene_id``, in
    ``session_id`` when both are given, else the session's latest scene; ``None`` if there is none."""
    if scene_id is not None:
        return await conn.fetchrow("SELECT scene_id, session_id FROM scenes WHERE scene_id = $1"
                                   " AND ($2::text IS NULL OR session_id = $2)", scene_id, session_id)
    return await conn.fetchrow("SELECT scene_id, session_id FROM scenes WHERE session_id = $1"
                               " ORDER BY requested_at DESC, scene_id DESC LIMIT 1", session_id)


async def accepted_shots(conn: asyncpg.Connection | asyncpg.Pool, scene_id: str) -> list[asyncpg.Record]:
    """The scene's accepted shots, those whose best scored attempt passed, each with that attempt
    and its pattern context and modifier (what feedback on the whole scene applies to)."""
    # The best attempt as scene_detail has it: the highest composite, the earliest on a tie.
    return await conn.fetch(
        "SELECT shot_number, attempt, context, modifier FROM (SELECT DISTINCT ON (shot_number) shot_number, attempt,"
        "   context, modifier, passed FROM scores WHERE scene_id = $1 AND status = 'ok'"
        "   ORDER BY shot_number, composite DESC, attempt) best"
        " WHERE passed ORDER BY shot_number",
        scene_id,
    )


async def pattern_rows(conn: asyncpg.Connection | asyncpg.Pool) -> list[asyncpg.Record]:
    """Every pattern with how much of its evidence came from each source."""
    return await conn.fetch(
        "SELECT p.context, p.modifier, p.alpha_micros, p.beta_micros, p.observations, p.square_micros, p.updated_at,"
        " coalesce((SELECT jsonb_object_agg(source, n) FROM (SELECT source, count(*) AS n FROM pattern_updates u"
        "   WHERE u.context = p.context AND u.modifier = p.modifier GROUP BY source) c), '{}'::jsonb) AS sources"
        " FROM patterns p ORDER BY p.context, p.modifier"
    )


TREND_DIMENSIONS = {
    "day": "'all'",
    "pattern": "s.context || ' / ' || s.modifier",
    "workflow": "s.workflow || ' / scorer ' || s.scorer_version",
}


TREND_BUCKETS = ("day", "hour")


async def quality_trends(
    conn: asyncpg.Connection | asyncpg.Pool, *, by: str, days: int, bucket: str = "day"
) -> list[dict[str, Any]]:
    """Scores per ``bucket`` (``day`` or ``hour``) and per ``by`` (``day``: overall, ``pattern``
    or ``workflow``) over the last ``days``."""
    key = TREND_DIMENSIONS[by]
    assert bucket in TREND_BUCKETS, bucket
    rows = await conn.fetch(
        f"SELECT date_trunc('{bucket}', s.scored_at, 'UTC') AS bucket_start,"
        f" date_trunc('day', s.scored_at AT TIME ZONE 'UTC')::date AS day, {key} AS key,"
        " count(*) AS attempts, avg(s.composite) FILTER (WHERE s.status = 'ok') AS mean_score,"
        " avg(s.passed::int) AS pass_rate, count(*) FILTER (WHERE s.status <> 'ok') AS failed"
        " FROM scores s WHERE s.scored_at >= now() - make_interval(days => $1)"
        " GROUP BY 1, 2, 3 ORDER BY 1, 3",
        days,
    )
    return [dict(r) for r in rows]


async def regression_alerts(conn: asyncpg.Connection | asyncpg.Pool) -> list[dict[str, Any]]:
    """Every regression alert (director/alerts.py), newest first."""
    rows = await conn.fetch("SELECT workflow, previous_workflow, detected_at, alert FROM regression_alerts"
                            " ORDER BY detected_at DESC")
    return [{**dict(r), **json.loads(r["alert"]), "detected_at": r["detected_at"]} for r in rows]


async def scene_exists(conn: asyncpg.Connection | asyncpg.Pool, scene_id: str) -> bool:
    return bool(await conn.fetchval("SELECT true FROM scenes WHERE scene_id = $1", scene_id))
