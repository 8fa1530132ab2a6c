"""refiner: ``shot.planned`` -> ``prompt.refined``, choosing a modifier from the pattern table."""

from __future__ import annotations

from agents.stage import DatabaseStage
from director.refiner import POLICIES
from events.envelope import Envelope
from events.models import ShotPlanned
from events.topics import SHOT_PLANNED
from foundation.settings import Settings
from render.backends import workflow_name
from store.memory import MemoryCache, configured_embedder
from store.projections import Origin
from store.queries import decide_once
from store.refining import refine_planned


class Refiner(DatabaseStage):
    name = "refiner"
    inputs = (SHOT_PLANNED,)

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.max_in_flight = settings.refine_in_flight
        self.memory: MemoryCache | None = None
        if settings.refiner_policy not in POLICIES:  # at start, not on every shot
            raise ValueError(f"TOWER_REFINER_POLICY={settings.refiner_policy!r} is not one of {', '.join(POLICIES)}")

    async def start(self) -> None:
        await super().start()
        if self.settings.memory_prior_strength > 0:  # a server embedder that cannot be used stops the start
            self.memory = MemoryCache(await configured_embedder(self.settings))

    async def handle(self, envelope: Envelope[ShotPlanned], origin: Origin) -> list[Envelope]:
        refined = await refine_planned(self.pool, envelope.value, self.settings,
                                       workflow=workflow_name(self.settings, envelope.value.render_preset),
                                       now=envelope.time, memory=self.memory)
        decided = await decide_once(self.pool, envelope.id, refined.prompt)
        return [envelope.derive(refined.model_copy(update={"prompt": decided}), source=self.source)]
