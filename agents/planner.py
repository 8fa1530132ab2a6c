"""planner: ``scene.requested`` -> one ``shot.planned`` (attempt 1) per planned shot."""

from __future__ import annotations

from agents.stage import Stage
from director.planner import plan_scene
from events.envelope import Envelope
from events.models import SceneRequested, ShotPlanned
from events.topics import SCENE_REQUESTED
from store.projections import Origin


class Planner(Stage):
    name = "planner"
    inputs = (SCENE_REQUESTED,)

    async def handle(self, envelope: Envelope[SceneRequested], origin: Origin) -> list[Envelope]:
        request = envelope.value
        plan = plan_scene(request, fps=self.settings.render_fps)
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
                    overall_mood=plan.overall_mood,
                    lighting_suggestions=plan.lighting_suggestions,
                    plan_notes=list(plan.notes),
                    character_sheets=request.character_sheets,
                ),
                source=self.source,
                index=index,
            )
            for index, shot in enumerate(plan.shots)
        ]
