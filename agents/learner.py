"""learner: projects every topic into PostgreSQL (the read models behind the API and the CLI) and
folds ``quality.scored`` and ``feedback.submitted`` into the pattern table. It decides no retries
(the retry controller, :mod:`agents.retrier`, does); what it publishes is a workflow version's
regression alert, which its fold detects."""

from __future__ import annotations

from agents.stage import DatabaseStage
from director.escalation import credited
from events.envelope import Envelope
from events.models import QualityScored
from events.topics import TOPICS
from foundation.settings import Settings
from store.projections import Origin, apply_dead_letter, apply_event, apply_score, regression_alert


class Learner(DatabaseStage):
    name = "learner"
    inputs = TOPICS
    reads_dead_letters = True  # a scene whose event is dead-lettered is marked failed

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.max_in_flight = settings.learn_in_flight

    async def handle(self, envelope: Envelope, origin: Origin) -> list[Envelope]:
        scored = envelope.value
        async with self.pool.acquire() as conn:
            if not isinstance(scored, QualityScored):
                await apply_event(conn, envelope, origin)
                return []
            applied = await apply_score(conn, envelope, origin)
            if not (self.settings.learner_emits_alerts and credited(scored)):
                return []
            alert = await regression_alert(conn, envelope, applied.workflow)
        return [envelope.derive(alert, source=self.source)] if alert is not None else []

    async def on_dead_letter(self, key: bytes | None, headers: dict[str, str], origin: Origin) -> None:
        async with self.pool.acquire() as conn:
            await apply_dead_letter(conn, key, headers, origin)

    async def on_produced(self, envelope: Envelope, outputs: list[Envelope]) -> None:
        for output in outputs:  # a regression alert: sent once the broker has it
            await self.pool.execute("UPDATE regression_alerts SET sent = true WHERE workflow = $1",
                                    output.value.workflow)
