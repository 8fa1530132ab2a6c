"""The learner's and refiner's effects in the real database: each applied once."""

from __future__ import annotations

from datetime import UTC, datetime

from director.learning import fold_all
from director.refiner import refine
from events.envelope import Envelope
from events.models import QualityScored
from events.topics import QUALITY_SCORED
from store.pool import open_pool
from store.projections import Origin, apply_event
from store.queries import decide_once, pattern_table


def scored_envelope(planned, event_id: str, composite: float) -> Envelope:
    refined = refine(planned, {}, width=64, height=64, workflow="w", learner_version="1")
    value = QualityScored(**refined.model_dump(), status="ok", composite=composite, passed=composite >= 0.6,
                          scorer_version="t", device="cpu")
    return Envelope(id=event_id, source="tower/test", type=QUALITY_SCORED.event_type, scene_id=value.scene_id,
                    session_id=value.session_id, value=value, time=datetime.now(UTC))


async def test_each_event_and_each_attempt_teaches_once(database_url, kai_shots):
    pool = await open_pool(database_url)
    try:
        origin = Origin("learner", "quality.scored", 0, 0)
        first = scored_envelope(kai_shots[0], "e-1", 0.3)
        async with pool.acquire() as conn:
            assert await apply_event(conn, first, origin) is True
            assert await apply_event(conn, first, origin) is False  # redelivery
            # The same attempt scored again under another id (e.g. a reused scene id).
            assert await apply_event(conn, scored_envelope(kai_shots[0], "e-2", 0.9), origin) is True
            table = await pattern_table(conn)
            assert table == fold_all([first.value])
            assert await conn.fetchval("SELECT count(*) FROM scores") == 1
    finally:
        await pool.close()


async def test_the_refiners_decision_is_made_once_per_planned_event(database_url, kai_shots):
    pool = await open_pool(database_url)
    try:
        one = refine(kai_shots[0], {}, width=64, height=64, workflow="w", learner_version="1").prompt
        other = one.model_copy(update={"modifier": "something-else", "seed": one.seed + 1})
        assert await decide_once(pool, "planned-1", one) == one
        assert await decide_once(pool, "planned-1", other) == one  # redelivered after the table moved
        assert await decide_once(pool, "planned-2", other) == other
    finally:
        await pool.close()


async def test_decisions_see_related_contexts_and_discount_old_evidence(database_url):
    from datetime import timedelta

    from director.learning import LearningParameters
    from store.queries import decision_posteriors, evidence_near

    now = datetime(2026, 12, 1, tzinfo=UTC)
    day = timedelta(days=1)
    pool = await open_pool(database_url)
    try:
        rows = [  # (context, modifier, reward, weight, age)
            ("close-up|calm|day|wf_1", "a", 1.0, 1, 0 * day),
            ("close-up|calm|day|wf_1", "a", 0.0, 2, 10 * day),  # a human rating, ten days old
            ("wide|tense|day|wf_1", "b", 0.5, 1, 0 * day),
            ("close-up|calm|day|wfX1", "a", 1.0, 1, 0 * day),  # `_` is not a wildcard: another workflow
        ]
        await pool.executemany(
            "INSERT INTO pattern_updates (event_id, scene_id, shot_number, attempt, context, modifier, reward,"
            " alpha_micros, beta_micros, observations, source, weight, updated_at)"
            " VALUES ($1, 's', 1, 1, $2, $3, $4, 0, 0, 1, 'auto', $5, $6)",
            [(f"e{i}", c, m, r, w, now - age) for i, (c, m, r, w, age) in enumerate(rows)],
        )
        target = "close-up|tense|night|wf_1"
        undiscounted = await evidence_near(pool, target, now=now, half_life_s=None)
        assert undiscounted == {}, "without a half-life the exact table is read, and it is empty here"
        halved = await evidence_near(pool, target, now=now, half_life_s=10 * 86400)
        assert set(halved) == {("close-up|calm|day|wf_1", "a"), ("wide|tense|day|wf_1", "b")}
        good, bad, square = halved[("close-up|calm|day|wf_1", "a")]
        assert good == 1.0 and abs(bad - 2 * 0.5) < 1e-9, "a weight-2 rating ten days old counts 1 at a 10-day half-life"
        assert square == 1.0
        chosen = await decision_posteriors(pool, target, ["a", "b", "c"], now=now, learning=LearningParameters(
            half_life_s=10 * 86400, borrowed_strength=4))
        # Borrowed: a's neighbour saw 1 good and 1 (discounted) bad; nobody saw c.
        assert (chosen["a"].alpha, chosen["a"].beta) == (2.0, 2.0) and (chosen["c"].alpha, chosen["c"].beta) == (1.0, 1.0)
        assert set(chosen) == {"a", "b", "c"}
    finally:
        await pool.close()


async def test_a_worse_workflow_version_raises_one_regression_alert(database_url, kai_shots):
    from store.projections import apply_score, regression_alert

    pool = await open_pool(database_url)

    def scored(i: int, workflow: str, composite: float) -> Envelope:
        planned = kai_shots[0].model_copy(update={"scene_id": f"scene-{workflow}-{i}"})
        envelope = scored_envelope(planned, f"{workflow}-{i}", composite)
        prompt = envelope.value.prompt.model_copy(update={"context": f"wide|calm|day|{workflow}"})
        value = envelope.value.model_copy(update={"prompt": prompt})
        return Envelope(id=envelope.id, source=envelope.source, type=envelope.type, scene_id=value.scene_id,
                        session_id=value.session_id, value=value, time=envelope.time)

    try:
        async with pool.acquire() as conn:
            for i in range(30):
                await apply_event(conn, scored(i, "wf-1", 0.8 + (i % 3) * 0.01), Origin("learner", "q", 0, i))
            alerts = []
            for i in range(10):
                event = scored(i, "wf-2", 0.55 + (i % 3) * 0.01)
                applied = await apply_score(conn, event, Origin("learner", "q", 1, i))
                alerts.append(await regression_alert(conn, event, applied.workflow))
            assert alerts[:9] == [None] * 9, "nothing to say before ten scores of the new version"
            alert = alerts[9]
            assert alert is not None and (alert.workflow, alert.previous_workflow) == ("wf-2", "wf-1")
            assert alert.previous_mean - alert.mean > 0.2 and "wf-2 scores" in alert.reason
            later = scored(10, "wf-2", 0.55)
            applied = await apply_score(conn, later, Origin("learner", "q", 1, 10))
            assert await regression_alert(conn, later, applied.workflow) is None, \
                "recorded but unsent: only the score that raised it sends it"
            redelivered = await apply_score(conn, event, Origin("learner", "q", 1, 9))
            assert not redelivered.claimed
            assert await regression_alert(conn, event, redelivered.workflow) == alert, \
                "unsent: offered again, same content"
            await conn.execute("UPDATE regression_alerts SET sent = true")
            redelivered = await apply_score(conn, event, Origin("learner", "q", 1, 9))
            assert await regression_alert(conn, event, redelivered.workflow) is None, "sent once"
    finally:
        await pool.close()


async def test_a_score_reads_back_its_workflow_state_once(database_url, kai_shots):
    from store.projections import apply_score

    pool = await open_pool(database_url)
    try:
        async with pool.acquire() as conn:
            first = scored_envelope(kai_shots[0], "s-1", 0.4)
            applied = await apply_score(conn, first, Origin("learner", "quality.scored", 0, 0))
            assert applied.claimed
            assert applied.workflow is not None and applied.workflow.samples == 1, "a credited first attempt counts"

            second = scored_envelope(kai_shots[0].model_copy(update={"attempt": 2, "escalation": "new-seed"}), "s-2", 0.3)
            applied = await apply_score(conn, second, Origin("learner", "quality.scored", 0, 1))
            assert applied.workflow is None, "a retry is not credited, so not counted for its workflow"

            again = await apply_score(conn, first, Origin("learner", "quality.scored", 0, 0))
            assert not again.claimed
            assert again.workflow.samples == 1, "and is not counted twice"
            assert await conn.fetchval("SELECT observations FROM patterns") == 1
    finally:
        await pool.close()


async def test_the_retry_controller_decides_each_attempt_once_from_its_own_state(database_url, kai_shots):
    from director.escalation import best_of
    from store.retries import record_decision, retry_state

    pool = await open_pool(database_url)
    try:
        first = scored_envelope(kai_shots[0], "s-1", 0.4)
        state = await retry_state(pool, first.value)
        assert not state.decided and state.best is None
        assert best_of(state.best, first.value).attempt == 1, "the new score itself is the best"
        await record_decision(pool, first)

        second = scored_envelope(kai_shots[0].model_copy(update={"attempt": 2, "escalation": "new-seed"}), "s-2", 0.3)
        state = await retry_state(pool, second.value)
        assert not state.decided and (state.best.attempt, state.best.composite) == (1, 0.4)
        assert best_of(state.best, second.value).attempt == 1, "an earlier attempt stays the best"
        await record_decision(pool, second)

        again = await retry_state(pool, first.value)
        assert again.decided, "a redelivery sees the follow-up already sent"
        # The same attempt scored again under another id: still one decision, the first kept.
        await record_decision(pool, scored_envelope(kai_shots[0], "s-1-again", 0.9))
        assert await pool.fetchval("SELECT count(*) FROM retry_decisions") == 2
        assert (await retry_state(pool, second.value)).best.composite == 0.4
    finally:
        await pool.close()


async def test_a_label_containing_the_separator_keeps_its_score_in_its_workflow(database_url, kai_shots):
    """A planner (or a producer of shot.planned) may write any label: "neon | rain" is lighting,
    not a field boundary. The context key escapes it, and SQL reads the workflow from its own
    column; it had split the key and counted the score under a workflow " rain"."""
    from director.learning import context_parts
    from store.projections import apply_score
    from store.queries import evidence_near, quality_trends

    shot = kai_shots[0].shot.model_copy(update={"lighting": "neon | rain", "mood": "calm\\tense"})
    envelope = scored_envelope(kai_shots[0].model_copy(update={"shot": shot}), "e-pipe", 0.7)
    context = envelope.value.prompt.context
    assert context_parts(context) == {"camera_angle": shot.camera_angle, "mood": "calm\\tense",
                                      "lighting": "neon | rain", "workflow": "w"}
    pool = await open_pool(database_url)
    try:
        async with pool.acquire() as conn:
            applied = await apply_score(conn, envelope, Origin("learner", "quality.scored", 0, 0))
            assert applied.workflow is not None and applied.workflow.samples == 1
            assert await conn.fetchval("SELECT workflow FROM workflow_versions") == "w"
            rows = await quality_trends(conn, by="workflow", days=1)
            assert [r["key"] for r in rows] == ["w / scorer t"]
            # The refiner's read of the workflow's evidence finds the pattern the score taught.
            near = await evidence_near(conn, context, now=datetime.now(UTC), half_life_s=None)
            assert (context, envelope.value.prompt.modifier) in near
    finally:
        await pool.close()
