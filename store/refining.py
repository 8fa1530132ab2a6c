"""Refining a planned shot against what the store holds: the pattern table (the decision, by the
configured policy) and the remembered character sheets. The refiner stage and the API's
``prompt/enhance`` both refine through :func:`refine_planned`, so a preview is what the stage would
write."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import asyncpg

from director.embedding_server import EmbedderUnavailable
from director.escalation import budget_stop
from director.learning import learning_parameters
from director.memory import attempt_text, memory_prior
from director.modifiers import MODIFIERS
from director.refiner import pattern_context, refine
from events.models import PromptRefined, ShotPlanned
from foundation.settings import Settings
from store.memory import MemoryCache, neighbours
from store.queries import character_sheets_for, decision_posteriors

log = logging.getLogger("tower.refining")


async def remembered_prior(pool: asyncpg.Pool, planned: ShotPlanned, workflow: str, settings: Settings,
                           memory: MemoryCache | None) -> dict[str, tuple[float, float]] | None:
    """The memory prior of a planned shot (:func:`director.memory.memory_prior`), or ``None`` when
    it is off (no cache, or ``TOWER_MEMORY_PRIOR_STRENGTH`` 0)."""
    if memory is None or settings.memory_prior_strength <= 0:
        return None
    memories = await memory.current(pool)
    try:
        [query] = await memory.embedder.embed([attempt_text(planned.shot)])
    except EmbedderUnavailable as exc:  # the prior is advice: deciding without it beats not deciding
        log.warning("memory prior skipped: %s", exc, extra={"scene_id": planned.scene_id, "shot": planned.shot.shot_number})
        return None
    near = neighbours(memories, query, workflow=workflow, k=settings.memory_prior_k,
                      exclude_shot=(planned.scene_id, planned.shot.shot_number))
    return memory_prior(near, settings.memory_prior_strength)


async def refine_planned(pool: asyncpg.Pool, planned: ShotPlanned, settings: Settings, *, workflow: str,
                         now: datetime, memory: MemoryCache | None = None) -> PromptRefined:
    """``planned`` refined with the pattern table as of ``now`` for ``workflow`` and the sheets of
    its characters that the request did not give. Two independent reads on two pooled
    connections: one round trip's wait, not two. With ``memory`` and a
    ``TOWER_MEMORY_PRIOR_STRENGTH``, the nearest remembered shots lend a prior too (one more round
    trip before them: the rows remembered since the last decision)."""
    missing = [name for name in planned.shot.characters if name not in planned.character_sheets]
    prior = await remembered_prior(pool, planned, workflow, settings, memory)  # no I/O when off
    posteriors, sheets = await asyncio.gather(
        decision_posteriors(pool, pattern_context(planned.shot, workflow), list(MODIFIERS), now=now,
                            learning=learning_parameters(settings), memory=prior),
        character_sheets_for(pool, missing),
    )
    refined = refine(planned, posteriors, sheets, width=settings.render_width, height=settings.render_height,
                     workflow=workflow, learner_version=settings.learner_version, policy=settings.refiner_policy,
                     max_steps=settings.render_max_steps)
    if planned.max_render_seconds is None:
        return refined
    spent_s, per_attempt_s = await render_spend(pool, planned.scene_id)
    stop = budget_stop(planned.attempt, planned.max_attempts, planned.max_render_seconds, spent_s, per_attempt_s)
    return refined.model_copy(update={"prompt": refined.prompt.model_copy(update={"budget_stop": stop})}) if stop else refined


async def render_spend(conn: asyncpg.Connection | asyncpg.Pool, scene_id: str) -> tuple[float, float]:
    """The scene's render seconds so far and per attempt (the mean), as the learner has projected
    its renders: a render still running or not yet projected is not counted."""
    row = await conn.fetchrow("SELECT coalesce(sum(render_ms), 0) / 1000 AS spent, coalesce(avg(render_ms), 0) / 1000"
                              " AS mean FROM attempts WHERE scene_id = $1 AND render_ms IS NOT NULL", scene_id)
    return float(row["spent"]), float(row["mean"])
