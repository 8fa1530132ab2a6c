"""retrier: ``quality.scored`` -> ``shot.planned`` (the shot's next attempt, one rung up the
escalation ladder) or ``shot.review`` (its budget is spent), or nothing (it passed).

The retry controller reads only the scores, in its own consumer group, and keeps its own state
(:mod:`store.retries`), so a retry never waits behind the learner's projections. A score is
decided from the shot's earlier attempts (a read), the follow-up is sent, and only once the
broker has it is the attempt recorded as decided: a crash in between decides it again, to the
same derived event id; a redelivery or a replay of a decided score sends nothing.
"""

from __future__ import annotations

from agents.stage import DatabaseStage
from director.escalation import best_of, follow_up
from events.envelope import Envelope
from events.models import QualityScored
from events.topics import QUALITY_SCORED
from foundation.settings import Settings
from store.projections import Origin
from store.retries import record_decision, retry_state


class RetryController(DatabaseStage):
    name = "retrier"
    inputs = (QUALITY_SCORED,)

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.max_in_flight = settings.retry_in_flight

    async def handle(self, envelope: Envelope[QualityScored], origin: Origin) -> list[Envelope]:
        scored = envelope.value
        state = await retry_state(self.pool, scored)
        if state.decided:
            return []
        decision = follow_up(scored, best_of(state.best, scored))
        return [envelope.derive(decision, source=self.source)] if decision is not None else []

    async def on_produced(self, envelope: Envelope[QualityScored], outputs: list[Envelope]) -> None:
        await record_decision(self.pool, envelope)
