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
