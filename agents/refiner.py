"""refiner: ``shot.planned`` -> ``prompt.refined``, choosing a modifier from the pattern table."""

from __future__ import annotations

import asyncpg

from agents.stage import Stage
from director.refiner import pattern_context, refine
from events.envelope import Envelope
from events.models import ShotPlanned
from events.topics import SHOT_PLANNED
from render.backends import workflow_name
from store.pool import open_pool
from store.projections import Origin
from store.queries import posteriors_for


class Refiner(Stage):
    name = "refiner"
    inputs = (SHOT_PLANNED,)
    pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        self.pool = await open_pool(self.settings.database_url, max_size=2)

    async def stop(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def handle(self, envelope: Envelope[ShotPlanned], origin: Origin) -> list[Envelope]:
        assert self.pool is not None, "Refiner.start() opens the pool before the first event"
        planned = envelope.value
        workflow = workflow_name(self.settings)
        posteriors = await posteriors_for(self.pool, pattern_context(planned.shot, workflow))
        refined = refine(
            planned,
            posteriors,
            width=self.settings.render_width,
            height=self.settings.render_height,
            workflow=workflow,
            learner_version=self.settings.learner_version,
        )
        return [envelope.derive(refined, source=self.source)]
