"""learner: projects every topic into Postgres and folds ``quality.scored`` into the pattern
table; a score under the shot's threshold re-issues the shot (attempt + 1) within its budget."""

from __future__ import annotations

from agents.stage import DatabaseStage
from director.learning import retry_of
from events.envelope import Envelope
from events.models import QualityScored
from events.topics import TOPICS
from store.projections import Origin, apply_dead_letter, apply_event


class Learner(DatabaseStage):
    name = "learner"
    inputs = TOPICS
    reads_dead_letters = True  # a scene whose event is dead-lettered is marked failed

    async def handle(self, envelope: Envelope, origin: Origin) -> list[Envelope]:
        async with self.pool.acquire() as conn:
            await apply_event(conn, envelope, origin)
            if not isinstance(envelope.value, QualityScored):
                return []
            retry = retry_of(envelope.value) if self.settings.learner_emits_retries else None
            # Sent unless the broker already has it: a redelivery after a crash between the
            # commit above and the produce re-sends it (same derived id); a replay does not.
            if retry is None or await conn.fetchval(
                "SELECT retry_sent FROM scores WHERE scene_id = $1 AND shot_number = $2 AND attempt = $3",
                *_attempt_key(envelope.value),
            ):
                return []
        return [envelope.derive(retry, source=self.source)]

    async def on_dead_letter(self, key: bytes | None, headers: dict[str, str], origin: Origin) -> None:
        async with self.pool.acquire() as conn:
            await apply_dead_letter(conn, key, headers, origin)

    async def on_produced(self, envelope: Envelope, outputs: list[Envelope]) -> None:
        if outputs:
            await self.pool.execute(
                "UPDATE scores SET retry_sent = true WHERE scene_id = $1 AND shot_number = $2 AND attempt = $3",
                *_attempt_key(envelope.value),
            )


def _attempt_key(value: QualityScored) -> tuple[str, int, int]:
    # One retry per attempt, even if two scorings of the same attempt arrive under different ids.
    return value.scene_id, value.shot.shot_number, value.attempt
