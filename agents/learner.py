"""learner: projects every topic into Postgres and folds ``quality.scored`` into the pattern
table; a score under the shot's threshold re-issues the shot one rung up the escalation ladder
(attempt + 1) within its budget, and a shot whose budget is spent is sent to human review."""

from __future__ import annotations

from pydantic import BaseModel

from agents.stage import DatabaseStage
from director.escalation import credited, retry_of, review_of, rung
from events.envelope import Envelope
from events.models import QualityScored, RegressionDetected, ShotPlanned, ShotReviewRequested
from events.topics import TOPICS
from foundation.settings import Settings
from store.projections import BestAttempt, Origin, apply_dead_letter, apply_event, apply_score, regression_alert


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
            if not self.settings.learner_emits_retries:
                return []
            outputs: list[BaseModel] = []
            # Sent unless the broker already has it: a redelivery after a crash between the
            # commit above and the produce re-sends it (same derived id); a replay does not.
            if not applied.retry_sent and (follow_up := _follow_up(scored, applied.best)):
                outputs.append(follow_up)
            if credited(scored) and (alert := await regression_alert(conn, envelope, applied.workflow)):
                outputs.append(alert)
        return [envelope.derive(value, source=self.source) for value in outputs]

    async def on_dead_letter(self, key: bytes | None, headers: dict[str, str], origin: Origin) -> None:
        async with self.pool.acquire() as conn:
            await apply_dead_letter(conn, key, headers, origin)

    async def on_produced(self, envelope: Envelope, outputs: list[Envelope]) -> None:
        for output in outputs:
            if isinstance(output.value, RegressionDetected):
                await self.pool.execute("UPDATE regression_alerts SET sent = true WHERE workflow = $1",
                                        output.value.workflow)
            else:
                await self.pool.execute(
                    "UPDATE scores SET retry_sent = true WHERE scene_id = $1 AND shot_number = $2 AND attempt = $3",
                    *_attempt_key(envelope.value),
                )


def _follow_up(scored: QualityScored, best: BestAttempt | None) -> ShotPlanned | ShotReviewRequested | None:
    """The retry one rung up the ladder, a review request when the budget is spent, or nothing."""
    if scored.passed:
        return None
    if scored.attempt < scored.max_attempts:
        keep = best.modifier if best and rung(scored.attempt + 1) == "workflow-setting" else None
        return retry_of(scored, best_modifier=keep)
    return review_of(
        scored, best_attempt=best.attempt if best else None, best_composite=best.composite if best else None
    )


def _attempt_key(value: QualityScored) -> tuple[str, int, int]:
    # One follow-up per attempt, even if two scorings of the same attempt arrive under different ids.
    return value.scene_id, value.shot.shot_number, value.attempt
