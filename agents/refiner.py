"""refiner: ``shot.planned`` -> ``prompt.refined``, choosing a modifier from the pattern table."""

from __future__ import annotations

import asyncio

from agents.stage import DatabaseStage
from director.learning import learning_parameters
from director.modifiers import MODIFIERS
from director.refiner import POLICIES, pattern_context, refine
from events.envelope import Envelope
from events.models import ShotPlanned
from events.topics import SHOT_PLANNED
from foundation.settings import Settings
from render.backends import workflow_name
from store.projections import Origin
from store.queries import character_sheets_for, decide_once, decision_posteriors


class Refiner(DatabaseStage):
    name = "refiner"
    inputs = (SHOT_PLANNED,)

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.max_in_flight = settings.refine_in_flight
        if settings.refiner_policy not in POLICIES:  # at start, not on every shot
            raise ValueError(f"TOWER_REFINER_POLICY={settings.refiner_policy!r} is not one of {', '.join(POLICIES)}")

    async def handle(self, envelope: Envelope[ShotPlanned], origin: Origin) -> list[Envelope]:
        planned = envelope.value
        workflow = workflow_name(self.settings)
        context = pattern_context(planned.shot, workflow)
        missing = [name for name in planned.shot.characters if name not in planned.character_sheets]
        # Two independent reads on two pooled connections: one round trip's wait, not two.
        posteriors, sheets = await asyncio.gather(
            decision_posteriors(self.pool, context, list(MODIFIERS), now=envelope.time, learning=learning_parameters(self.settings)),
            character_sheets_for(self.pool, missing),
        )
        refined = refine(
            planned,
            posteriors,
            sheets,
            width=self.settings.render_width,
            height=self.settings.render_height,
            workflow=workflow,
            learner_version=self.settings.learner_version,
            policy=self.settings.refiner_policy,
        )
        decided = await decide_once(self.pool, envelope.id, refined.prompt)
        return [envelope.derive(refined.model_copy(update={"prompt": decided}), source=self.source)]
