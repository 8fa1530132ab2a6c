"""Fixtures for the pure-logic tests: no broker, no database."""

from __future__ import annotations

import pytest

from director.planner import plan_scene
from events.models import SceneRequested, ShotPlanned


@pytest.fixture
def kai_request() -> SceneRequested:
    return SceneRequested(
        scene_id="scene-kai",
        session_id="session-1",
        description="Create a scene where Kai fights the dragon",
        characters=["Kai", "Dragon"],
    )


@pytest.fixture
def kai_shots(kai_request: SceneRequested) -> list[ShotPlanned]:
    plan = plan_scene(kai_request, fps=4)
    return [
        ShotPlanned(
            scene_id=kai_request.scene_id,
            session_id=kai_request.session_id,
            attempt=1,
            max_attempts=3,
            quality_threshold=0.6,
            shot=shot,
            overall_mood=plan.overall_mood,
            lighting_suggestions=plan.lighting_suggestions,
        )
        for shot in plan.shots
    ]
