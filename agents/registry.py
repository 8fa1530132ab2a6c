"""The stages by name, in pipeline order, imported on demand (only the scorer needs torch)."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the stages themselves are imported on demand
    from agents.stage import Stage

STAGE_PATHS: dict[str, str] = {
    "planner": "agents.planner:Planner",
    "refiner": "agents.refiner:Refiner",
    "renderer": "agents.renderer:Renderer",
    "scorer": "agents.scorer:ScorerStage",
    "learner": "agents.learner:Learner",
    "retrier": "agents.retrier:RetryController",
    "editor": "agents.editor:Editor",
}
STAGE_NAMES: tuple[str, ...] = tuple(STAGE_PATHS)


def stage_class(name: str) -> type[Stage]:
    try:
        module, _, attr = STAGE_PATHS[name].partition(":")
    except KeyError:
        raise LookupError(f"no stage {name!r}; stages: {', '.join(STAGE_NAMES)}") from None
    return getattr(import_module(module), attr)
