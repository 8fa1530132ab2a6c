"""The learner's writes: a projection per topic and the pattern update, one transaction per event.

The first statement of each transaction claims the event id in ``processed_events``; when the
claim finds the id already there, the event was applied before (a redelivery after a crash) and
the transaction writes nothing else. Effects are applied exactly once; delivery is at least once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from director.alerts import BASELINE_SAMPLES, checkpoint, regression
from director.escalation import credited
from director.learning import (
    Evidence,
    Posterior,
    context_parts,
    evidence_of,
    increments,
    is_final,
)
from events.envelope import Envelope, scene_of_key
from events.models import (
    FeedbackSubmitted,
    FrameRendered,
    PromptRefined,
    QualityScored,
    RegressionDetected,
    SceneAssembled,
    SceneRequested,
    ShotPlanned,
)
from store.memory import remember


@dataclass(frozen=True)
class Origin:
    """Where an event was read from, and by which stage.

    ``consumer`` is the stage name, not the consumer group: a replay under a new group id
    against the same database must still recognise what was applied.
    """

    consumer: str
    topic: str
    partition: int
    offset: int


# Every effect is claimed once per (consumer, event id): the claim, written once and used by every
# statement that projects an event ($1-$5: consumer, event id, topic, partition, offset).
_CLAIM = ('INSERT INTO processed_events (consumer, event_id, topic, partition, "offset")'
          " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true")
# The claim and the event's log row as CTEs of one statement: the log row only if the claim is new
# ($6-$12: type, source, scene, session, causation, time, payload; $2 the event id).
_CLAIM_AND_LOG = (f"claim AS ({_CLAIM}),"
                  " logged AS (INSERT INTO event_log (event_id, event_type, source, scene_id, session_id,"
                  " causation_id, event_time, payload) SELECT $2, $6, $7, $8, $9, $10, $11, $12"
                  " WHERE EXISTS (SELECT FROM claim) ON CONFLICT DO NOTHING)")


async def apply_event(conn: asyncpg.Connection, envelope: Envelope, origin: Origin) -> bool:
    """Project one event (and learn from it); ``False`` when it had been applied already."""
    if isinstance(envelope.value, QualityScored):
        return (await apply_score(conn, envelope, origin)).claimed
    async with conn.transaction():
        # The claim and the event log in one round trip: the log row only if the claim is new.
        claimed = await conn.fetchval(
            f"WITH {_CLAIM_AND_LOG} SELECT EXISTS (SELECT FROM claim)",
            origin.consumer, envelope.id, origin.topic, origin.partition, origin.offset,
            envelope.type, envelope.source, envelope.scene_id, envelope.session_id,
            envelope.causation_id, envelope.time, envelope.value.model_dump_json(),
        )
        if not claimed:
            return False
        value = envelope.value
        if isinstance(value, SceneRequested):
            await _scene(conn, envelope, value)
        elif isinstance(value, ShotPlanned):
            await _shot(conn, envelope, value)
        elif isinstance(value, PromptRefined):
            await _prompt(conn, envelope, value)
        elif isinstance(value, FrameRendered):
            await _frames(conn, envelope, value)
        elif isinstance(value, SceneAssembled):
            await _assembly(conn, envelope, value)
        elif isinstance(value, FeedbackSubmitted):
            evidence = evidence_of(value)
            await _feedback(conn, envelope, value, evidence)
            await _learn(conn, envelope, value.shot_number, value.attempt, evidence)
        return True


async def _scene(conn: asyncpg.Connection, env: Envelope, v: SceneRequested) -> None:
    inserted = await conn.fetchval(
        "INSERT INTO scenes (scene_id, session_id, description, characters, style, max_attempts,"
        " quality_threshold, requested_at, event_id, batch_id) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)"
        " ON CONFLICT (scene_id) DO NOTHING RETURNING true",
        v.scene_id, v.session_id, v.description, json.dumps(v.characters), v.style,
        v.max_attempts, v.quality_threshold, env.time, env.id, v.batch_id,
    )
    if v.batch_id is not None:
        await record_batch(conn, v.batch_id, v.batch_size or 1, env.time)
    if v.character_sheets:
        await conn.executemany(
            "INSERT INTO character_sheets AS c (name_key, name, sheet, updated_at, event_id) VALUES ($1,$2,$3,$4,$5)"
            " ON CONFLICT (name_key) DO UPDATE SET name = EXCLUDED.name, sheet = EXCLUDED.sheet,"
            " updated_at = EXCLUDED.updated_at, event_id = EXCLUDED.event_id"
            " WHERE (EXCLUDED.updated_at, EXCLUDED.event_id) > (c.updated_at, c.event_id)",
            [(name.lower(), name, sheet, env.time, env.id) for name, sheet in sorted(v.character_sheets.items())],
        )
    if inserted:
        await conn.execute(
            "INSERT INTO sessions (session_id, created_at, scene_count) VALUES ($1, $2, 1)"
            " ON CONFLICT (session_id) DO UPDATE SET scene_count = sessions.scene_count + 1",
            v.session_id, env.time,
        )


async def _assembly(conn: asyncpg.Connection, env: Envelope, v: SceneAssembled) -> None:
    """The scene's latest cut (by event time; a later regeneration re-cuts it)."""
    await conn.execute(
        "INSERT INTO scene_assemblies AS a (scene_id, event_id, assembled_at, inputs_sha256, payload)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scene_id) DO UPDATE SET event_id = EXCLUDED.event_id,"
        " assembled_at = EXCLUDED.assembled_at, inputs_sha256 = EXCLUDED.inputs_sha256, payload = EXCLUDED.payload"
        " WHERE (EXCLUDED.assembled_at, EXCLUDED.event_id) > (a.assembled_at, a.event_id)",
        v.scene_id, env.id, env.time, v.inputs_sha256, v.model_dump_json(),
    )


async def _shot(conn: asyncpg.Connection, env: Envelope, v: ShotPlanned) -> None:
    s = v.shot
    await conn.execute(
        "INSERT INTO shots (scene_id, shot_number, shot_count, camera_angle, camera_movement,"
        " duration, frame_count, characters, mood, lighting, action, expected_motion, overall_mood,"
        " lighting_suggestions, event_id) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)"
        " ON CONFLICT (scene_id, shot_number) DO NOTHING",
        v.scene_id, s.shot_number, s.shot_count, s.camera_angle, s.camera_movement, s.duration,
        s.frame_count, json.dumps(s.characters), s.mood, s.lighting, s.action, s.expected_motion,
        v.overall_mood, v.lighting_suggestions, env.id,
    )
    await conn.execute(
        "INSERT INTO attempts (scene_id, shot_number, attempt, planned_event_id, escalation, retry_reason)"
        " VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (scene_id, shot_number, attempt)"
        " DO UPDATE SET planned_event_id = EXCLUDED.planned_event_id, escalation = EXCLUDED.escalation,"
        " retry_reason = EXCLUDED.retry_reason",
        v.scene_id, s.shot_number, v.attempt, env.id, v.escalation, v.retry_reason,
    )


async def _prompt(conn: asyncpg.Connection, env: Envelope, v: PromptRefined) -> None:
    p = v.prompt
    # Upserts: the learner reads the five topics concurrently, so the attempt's row may have
    # been started by any of its events.
    await conn.execute(
        "INSERT INTO attempts (scene_id, shot_number, attempt, planned_event_id, prompt,"
        " negative_prompt, seed, modifier, modifier_probability, context, escalation, retry_reason,"
        " steps, cfg) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)"
        " ON CONFLICT (scene_id, shot_number, attempt) DO UPDATE SET prompt = EXCLUDED.prompt,"
        " negative_prompt = EXCLUDED.negative_prompt, seed = EXCLUDED.seed,"
        " modifier = EXCLUDED.modifier, modifier_probability = EXCLUDED.modifier_probability,"
        " context = EXCLUDED.context, escalation = EXCLUDED.escalation,"
        " retry_reason = EXCLUDED.retry_reason, steps = EXCLUDED.steps, cfg = EXCLUDED.cfg",
        v.scene_id, v.shot.shot_number, v.attempt, env.causation_id or env.id, p.prompt,
        p.negative_prompt, p.seed, p.modifier, p.modifier_probability, p.context, v.escalation,
        v.retry_reason, p.steps, p.cfg,
    )


async def _frames(conn: asyncpg.Connection, env: Envelope, v: FrameRendered) -> None:
    await conn.execute(
        "INSERT INTO attempts (scene_id, shot_number, attempt, render_status, render_reason, render_ms,"
        " backend) VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT (scene_id, shot_number, attempt) DO UPDATE SET"
        " render_status = EXCLUDED.render_status, render_reason = EXCLUDED.render_reason,"
        " render_ms = EXCLUDED.render_ms, backend = EXCLUDED.backend",
        v.scene_id, v.shot.shot_number, v.attempt, v.status, v.reason, v.render_ms, v.backend,
    )
    await conn.executemany(
        "INSERT INTO frames (scene_id, shot_number, attempt, frame_index, uri, width, height,"
        " sha256, event_id) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) ON CONFLICT DO NOTHING",
        [
            (v.scene_id, v.shot.shot_number, v.attempt, f.index, f.uri, f.width, f.height, f.sha256, env.id)
            for f in v.frames
        ],
    )


@dataclass(frozen=True)
class WorkflowState:
    """A workflow version's regression-check state: its first score, its credited scores so far,
    and its alert (JSON) if one was raised: by which score event, and whether the broker has it."""

    first_seen: datetime
    samples: int
    alert: str | None
    sent: bool | None
    raised_by: str | None  # the score event that raised the alert


@dataclass(frozen=True)
class ScoreApplied:
    """A score applied, and its workflow version's regression-check state right after it."""

    claimed: bool  # False: the event had been applied before (a redelivery, a replay)
    workflow: WorkflowState | None  # the score's workflow version, if the score is credited


def _learn_ctes(gate: str, **number: int) -> str:
    """Two CTEs of a larger statement: ``learned`` folds one piece of evidence into its pattern
    (when ``gate`` holds), ``updated`` logs the update. ``number`` gives the statement's parameter
    number of each value (see :func:`_learn_values`)."""
    n = {name: f"${i}" for name, i in number.items()}
    return (
        f"learned AS (INSERT INTO patterns AS p (context, modifier, alpha_micros, beta_micros, observations,"
        f" updated_at, square_micros) SELECT {n['context']}, {n['modifier']}, {n['prior']}::bigint + {n['alpha']}::bigint,"
        f" {n['prior']}::bigint + {n['beta']}::bigint, 1, {n['time']}, {n['square']}::bigint WHERE {gate}"
        f" ON CONFLICT (context, modifier) DO UPDATE SET alpha_micros = p.alpha_micros + {n['alpha']}::bigint,"
        f" beta_micros = p.beta_micros + {n['beta']}::bigint, observations = p.observations + 1,"
        f" updated_at = greatest(p.updated_at, {n['time']}), square_micros = p.square_micros + {n['square']}::bigint"
        f" RETURNING alpha_micros, beta_micros, observations),"
        f" updated AS (INSERT INTO pattern_updates (event_id, scene_id, shot_number, attempt, context, modifier, reward,"
        f" alpha_micros, beta_micros, observations, source, weight, updated_at) SELECT {n['event_id']}, {n['scene_id']},"
        f" {n['shot']}, {n['attempt']}, {n['context']}, {n['modifier']}, {n['reward']}, alpha_micros, beta_micros,"
        f" observations, {n['source']}, {n['weight']}, {n['time']} FROM learned)"
    )


def _learn_values(evidence: Evidence) -> tuple[str, str, int, int, int, int, float, float, str]:
    """context, modifier, prior, alpha, beta, square, reward, weight, source: the values
    :func:`_learn_ctes` adds, in micro-units (integers, so sums do not depend on order): the same
    :func:`~director.learning.increments` as the Python fold, so both give the same table."""
    alpha, beta, square = increments(evidence.reward, evidence.weight)
    return (evidence.context, evidence.modifier, Posterior().alpha_micros, alpha, beta, square, evidence.reward,
            evidence.weight, evidence.source)


# One statement, so one round trip and one commit (a statement is atomic on its own). The score
# is learned once per attempt: a second scoring of the same (scene, shot, attempt) under another
# event id (a reused scene id, a re-rendered attempt) teaches nothing new. The statement's final
# SELECT sees the tables as they were before it, so the new score and the new workflow count
# come from the sub-statements' RETURNING instead.
_APPLY_SCORE = """
WITH {claim_and_log},
  scored AS (INSERT INTO scores (scene_id, shot_number, attempt, status, reason, composite, passed, final,
    metrics, scorer_version, device, modifier, context, scored_at, event_id, escalation, credited, workflow)
    SELECT $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $11, $2, $26, $27, $38
    WHERE EXISTS (SELECT FROM claim)
    ON CONFLICT (scene_id, shot_number, attempt) DO NOTHING RETURNING true),
  {learn},
  counted AS (INSERT INTO workflow_versions AS w (workflow, first_seen, samples) SELECT $36::text, $11, 1
    FROM learned ON CONFLICT (workflow) DO UPDATE SET samples = w.samples + 1,
    first_seen = least(w.first_seen, EXCLUDED.first_seen) RETURNING first_seen, samples)
SELECT EXISTS (SELECT FROM claim) AS claimed,
  coalesce(counted.first_seen, w.first_seen) AS first_seen, coalesce(counted.samples, w.samples) AS samples,
  r.alert, r.sent, r.raised_by
FROM (VALUES (1)) AS one (x)
  LEFT JOIN counted ON true
  LEFT JOIN workflow_versions w ON w.workflow = $36::text
  LEFT JOIN regression_alerts r ON r.workflow = $36::text
""".format(claim_and_log=_CLAIM_AND_LOG, learn=_learn_ctes(gate="$27 AND EXISTS (SELECT FROM scored)", context=28, modifier=29, prior=30, alpha=31,
                            beta=32, square=33, reward=34, weight=35, source=37, time=11, event_id=2, scene_id=8,
                            shot=14, attempt=15))


async def apply_score(conn: asyncpg.Connection, envelope: Envelope, origin: Origin) -> ScoreApplied:
    """Project a score and learn from it (like :func:`apply_event`), in one round trip that also
    reads its workflow version's regression-check state (:func:`regression_alert`); then remember
    it (:func:`store.memory.remember`, idempotent)."""
    v = envelope.value
    assert isinstance(v, QualityScored)
    evidence = evidence_of(v)
    # Without evidence the learn CTE is skipped (its gate is false); the values only fill its places.
    context, modifier, prior, alpha, beta, square, reward, weight, source = _learn_values(
        evidence or Evidence(v.prompt.context, v.prompt.modifier, 0.0, "auto"))
    workflow = context_parts(v.prompt.context)["workflow"]
    row = await conn.fetchrow(
        _APPLY_SCORE,
        origin.consumer, envelope.id, origin.topic, origin.partition, origin.offset,
        envelope.type, envelope.source, envelope.scene_id, envelope.session_id,
        envelope.causation_id, envelope.time, v.model_dump_json(),
        v.scene_id, v.shot.shot_number, v.attempt, v.status, v.reason, v.composite, v.passed,
        is_final(v), json.dumps(v.metrics), v.scorer_version, v.device, v.prompt.modifier,
        v.prompt.context, v.escalation, evidence is not None,
        context, modifier, prior, alpha, beta, square, reward, weight,
        workflow if credited(v) else None, source, workflow,
    )
    workflow = (WorkflowState(row["first_seen"], row["samples"], row["alert"], row["sent"], row["raised_by"])
                if row["first_seen"] is not None else None)
    # Outside the claim: a redelivery after a crash between the two statements remembers it then.
    await remember(conn, envelope)
    return ScoreApplied(row["claimed"], workflow)


async def _feedback(conn: asyncpg.Connection, env: Envelope, v: FeedbackSubmitted, evidence: Evidence) -> None:
    await conn.execute(
        "INSERT INTO feedback (event_id, feedback_id, scene_id, shot_number, attempt, source, rating,"
        " comment, scores, reward, context, modifier, submitted_at)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
        env.id, v.feedback_id, v.scene_id, v.shot_number, v.attempt, v.source, v.rating, v.comment,
        json.dumps(v.scores.present()), evidence.reward, v.context, v.modifier, env.time,
    )


_LEARN = "WITH " + _learn_ctes(gate="true", context=1, modifier=2, prior=3, alpha=4, beta=5, square=6, reward=7,
                                weight=8, source=9, time=10, event_id=11, scene_id=12, shot=13, attempt=14) + \
    " SELECT count(*) FROM learned"


async def _learn(conn: asyncpg.Connection, env: Envelope, shot_number: int, attempt: int, evidence: Evidence) -> None:
    """Fold ``evidence`` into its pattern and log the update, in one statement."""
    await conn.execute(_LEARN, *_learn_values(evidence), env.time, env.id, env.scene_id, shot_number, attempt)


async def regression_alert(
    conn: asyncpg.Connection, envelope: Envelope[QualityScored], current: WorkflowState | None
) -> RegressionDetected | None:
    """The regression alert of the score's workflow version (:mod:`director.alerts`) if it is due
    and not yet sent: detected at a checkpoint, recorded once, and returned to the score event that
    raised it until it is sent (a redelivery of that event sends it then). ``current`` is the
    version's state right after the score (:attr:`ScoreApplied.workflow`); the scores themselves
    are read only at checkpoints."""
    if current is None:
        return None
    if current.alert is not None:
        mine = current.raised_by in (None, envelope.id)
        return RegressionDetected.model_validate_json(current.alert) if mine and not current.sent else None
    if not checkpoint(current.samples):
        return None
    scored = envelope.value
    workflow = context_parts(scored.prompt.context)["workflow"]
    previous = await conn.fetchrow(
        "SELECT workflow FROM workflow_versions WHERE (first_seen, workflow) < ($1, $2)"
        " ORDER BY first_seen DESC, workflow DESC LIMIT 1", current.first_seen, workflow,
    )
    if previous is None:
        return None
    # The version's first `samples` scores by event time: scores projected at the same time may
    # have committed since, and the checkpoint is about this many.
    scores = await conn.fetch(
        "(SELECT composite, 0 AS side FROM scores WHERE credited AND status = 'ok' AND workflow = $1"
        " ORDER BY scored_at, event_id LIMIT $4)"
        " UNION ALL (SELECT composite, 1 FROM scores WHERE credited AND status = 'ok'"
        " AND workflow = $2 ORDER BY scored_at DESC LIMIT $3)",
        workflow, previous["workflow"], BASELINE_SAMPLES, current.samples,
    )
    found = regression([r["composite"] for r in scores if r["side"] == 0], [r["composite"] for r in scores if r["side"] == 1])
    if found is None:
        return None
    alert = RegressionDetected(
        scene_id=scored.scene_id, session_id=scored.session_id, workflow=workflow,
        previous_workflow=previous["workflow"], mean=round(found.mean, 6), previous_mean=round(found.previous_mean, 6),
        samples=found.samples, previous_samples=found.previous_samples, p_value=found.p_value,
        reason=f"workflow {workflow} scores {found.mean:.3f} on {found.samples} first attempts against "
        f"{found.previous_mean:.3f} for {previous['workflow']} (drop {found.drop:.3f}, p = {found.p_value:.2g})",
    )
    await conn.execute(
        "INSERT INTO regression_alerts (workflow, previous_workflow, detected_at, alert, raised_by)"
        " VALUES ($1, $2, now(), $3, $4) ON CONFLICT DO NOTHING",
        workflow, previous["workflow"], alert.model_dump_json(), envelope.id,
    )
    return alert


async def record_batch(conn: asyncpg.Connection | asyncpg.Pool, batch_id: str, size: int, created_at: datetime) -> None:
    """Record a batch (idempotent: the first record of a batch id wins)."""
    await conn.execute(
        "INSERT INTO batches (batch_id, size, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        batch_id, size, created_at,
    )


async def open_batch(conn: asyncpg.Connection | asyncpg.Pool, batch_id: str, scene_ids: list[str],
                     created_at: datetime) -> list[str]:
    """Record a batch of new scenes, unless some of ``scene_ids`` exist already: those are
    returned (scene ids must be unique) and nothing is recorded."""
    taken = [scene_id for scene_id in scene_ids
             if await conn.fetchval("SELECT EXISTS (SELECT FROM scenes WHERE scene_id = $1)", scene_id)]
    if not taken:
        await record_batch(conn, batch_id, len(scene_ids), created_at)
    return taken


async def apply_dead_letter(conn: asyncpg.Connection, key: bytes | None, headers: dict[str, str], origin: Origin) -> bool:
    """Record a dead letter against its scene (the message key); ``False`` if seen before."""
    async with conn.transaction():
        claimed = await conn.fetchval(
            _CLAIM, origin.consumer, f"dlq:{origin.topic}:{origin.partition}:{origin.offset}", origin.topic,
            origin.partition, origin.offset,
        )
        if not claimed:
            return False
        try:
            failed_at = datetime.fromisoformat(headers["dlq_failed_at"])
            partition, offset = int(headers["dlq_original_partition"]), int(headers["dlq_original_offset"])
            original = headers["dlq_original_topic"]
        except (KeyError, ValueError):
            # Not a Tower dead letter (someone produced to the topic by hand): keep what there is.
            failed_at, original, partition, offset = datetime.now(UTC), origin.topic, origin.partition, origin.offset
        await conn.execute(
            "INSERT INTO scene_failures (original_topic, original_partition, original_offset, scene_id, event_id,"
            " consumer, error_class, reason, failed_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) ON CONFLICT DO NOTHING",
            original, partition, offset, scene_of_key(key), headers.get("ce_id"),
            headers.get("dlq_consumer", "?"), headers.get("dlq_error_class", "?"),
            headers.get("dlq_error_message", "no reason given"), failed_at,
        )
        return True
