"""Refining a planned shot against what the store holds: the pattern table (the decision, by the
configured policy) and the remembered character sheets. The refiner stage and the API's
``prompt/enhance`` both refine through :func:`refine_planned`, so a preview is what the stage would
write."""

from __future__ import annotations

import asyncio
from datetime import datetime

import asyncpg

from director.learning import learning_parameters
from director.modifiers import MODIFIERS
from director.refiner import pattern_context, refine
from events.models import PromptRefined, ShotPlanned
from foundation.settings import Settings
from store.queries import character_sheets_for, decision_posteriors


async def refine_planned(pool: asyncpg.Pool, planned: ShotPlanned, settings: Settings, *, workflow: str,
                         now: datetime) -> PromptRefined:
    """``planned`` refined with the pattern table as of ``now`` for ``workflow`` and the sheets of
    its characters that the request did not give. Two independent reads on two pooled
    connections: one round trip's wait, not two."""
    missing = [name for name in planned.shot.characters if name not in planned.character_sheets]
    posteriors, sheets = await asyncio.gather(
        decision_posteriors(pool, pattern_context(planned.shot, workflow), list(MODIFIERS), now=now,
                            learning=learning_parameters(settings)),
        character_sheets_for(pool, missing),
    )
    return refine(planned, posteriors, sheets, width=settings.render_width, height=settings.render_height,
                  workflow=workflow, learner_version=settings.learner_version, policy=settings.refiner_policy,
                  max_steps=settings.render_max_steps)
