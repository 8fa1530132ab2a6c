"""planner: ``scene.requested`` -> one ``shot.planned`` (attempt 1) per planned shot, by the
built-in planner or, with ``TOWER_PLANNER=llm``, a model behind an OpenAI-compatible endpoint."""

from __future__ import annotations

import httpx

from agents.stage import Stage
from director.llm_planner import LlmEndpoint, LlmOutcome, llm_plan
from director.planner import plan_scene
from events.envelope import Envelope
from events.models import SceneRequested, ShotPlanned
from events.topics import SCENE_REQUESTED
from foundation.settings import Settings
from store.projections import Origin


class Planner(Stage):
    name = "planner"
    inputs = (SCENE_REQUESTED,)
    _client: httpx.AsyncClient | None = None

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.max_in_flight = settings.plan_in_flight

    async def start(self) -> None:
        if self.settings.planner == "llm":
            self._client = httpx.AsyncClient(timeout=self.settings.planner_llm_timeout_s)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def plan(self, request: SceneRequested) -> LlmOutcome:
        if self.settings.planner != "llm":
            return LlmOutcome(plan_scene(request, fps=self.settings.render_fps), "builtin")
        endpoint = LlmEndpoint(self.settings.planner_llm_url, self.settings.planner_llm_model,
                               self.settings.planner_llm_timeout_s,
                               key.get_secret_value() if (key := self.settings.planner_llm_api_key) else None)
        return await llm_plan(request, fps=self.settings.render_fps, endpoint=endpoint, client=self._client)

    async def handle(self, envelope: Envelope[SceneRequested], origin: Origin) -> list[Envelope]:
        request = envelope.value
        outcome = await self.plan(request)
        plan = outcome.plan
        return [
            envelope.derive(
                ShotPlanned(
                    scene_id=request.scene_id,
                    session_id=request.session_id,
                    attempt=1,
                    max_attempts=request.max_attempts or self.settings.max_attempts,
                    quality_threshold=(
                        self.settings.quality_threshold if request.quality_threshold is None
                        else request.quality_threshold
                    ),
                    shot=shot,
                    style=request.style,
                    render_preset=request.render_preset,
                    max_render_seconds=request.max_render_seconds or self.settings.max_render_seconds,
                    overall_mood=plan.overall_mood,
                    lighting_suggestions=plan.lighting_suggestions,
                    plan_notes=list(plan.notes),
                    character_sheets=request.character_sheets,
                    planner=outcome.planner,
                    planner_fallback_reason=outcome.fallback_reason,
                ),
                source=self.source,
                index=index,
            )
            for index, shot in enumerate(plan.shots)
        ]
