"""Every topic Tower uses, declared once: name, model, CloudEvents type, retention. (Partitions
are a deployment setting, ``TOWER_TOPIC_PARTITIONS``.)"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from events.models import (
    FeedbackSubmitted,
    FrameRendered,
    PromptRefined,
    QualityScored,
    ReassemblyRequested,
    RegressionDetected,
    RenderProgress,
    SceneAssembled,
    SceneRequested,
    ShotPlanned,
    ShotReviewRequested,
)

DAY_MS = 24 * 60 * 60 * 1000
DEAD_LETTER_SUFFIX = ".dlq"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    model: type[BaseModel]
    event_type: str
    retention_ms: int = 14 * DAY_MS

    def qualified(self, prefix: str) -> str:
        """The topic's name on the broker (tests and multi-tenant clusters use a prefix)."""
        return f"{prefix}{self.name}"


def dead_letter_topic(topic: str) -> str:
    return f"{topic}{DEAD_LETTER_SUFFIX}"


SCENE_REQUESTED = TopicSpec("scene.requested", SceneRequested, "tower.scene.requested.v1")
SHOT_PLANNED = TopicSpec("shot.planned", ShotPlanned, "tower.shot.planned.v1")
PROMPT_REFINED = TopicSpec("prompt.refined", PromptRefined, "tower.prompt.refined.v1")
FRAME_RENDERED = TopicSpec("frame.rendered", FrameRendered, "tower.frame.rendered.v1")
# Kept forever: it is the learner's training log, replayed from offset 0 to rebuild the patterns.
QUALITY_SCORED = TopicSpec("quality.scored", QualityScored, "tower.quality.scored.v1", retention_ms=-1)

# Judgements from people and other systems; kept forever like quality.scored, for the same reason.
FEEDBACK_SUBMITTED = TopicSpec(
    "feedback.submitted", FeedbackSubmitted, "tower.feedback.submitted.v1", retention_ms=-1
)

# Progress is for watching, not for acting on: a day of it is plenty.
RENDER_PROGRESS = TopicSpec("render.progress", RenderProgress, "tower.render.progress.v1", retention_ms=DAY_MS)

# Shots that need a person: kept forever, it is the review queue's log.
SHOT_REVIEW = TopicSpec("shot.review", ShotReviewRequested, "tower.shot.review.v1", retention_ms=-1)

# Regressions of a workflow version against the one before it: for people and dashboards.
QUALITY_ALERTS = TopicSpec("quality.alerts", RegressionDetected, "tower.quality.alerts.v1", retention_ms=-1)

# A scene cut together once every shot is final (again after a shot is regenerated): the film's
# log, kept forever like the scores.
SCENE_ASSEMBLED = TopicSpec("scene.assembled", SceneAssembled, "tower.scene.assembled.v1", retention_ms=-1)
# Asks the editor to write a scene's film again (POST .../reassemble).
SCENE_REASSEMBLE = TopicSpec("scene.reassemble", ReassemblyRequested, "tower.scene.reassemble.v1")

# The pipeline's chain, in causal order.
PIPELINE: tuple[TopicSpec, ...] = (
    SCENE_REQUESTED,
    SHOT_PLANNED,
    PROMPT_REFINED,
    FRAME_RENDERED,
    QUALITY_SCORED,
)
# What the agents consume, each with a dead-letter topic: the chain, feedback for the learner, the
# assembled scenes (the learner projects them for the API) and requests to assemble one again.
TOPICS: tuple[TopicSpec, ...] = (*PIPELINE, FEEDBACK_SUBMITTED, SCENE_ASSEMBLED, SCENE_REASSEMBLE)
# Side topics: produced for people and dashboards, consumed by no agent (so no dead letters).
SIDE_TOPICS: tuple[TopicSpec, ...] = (RENDER_PROGRESS, SHOT_REVIEW, QUALITY_ALERTS)
# Dead letters are kept four times longer: someone has to look at them.
DEAD_LETTER_PARTITIONS = 1
DEAD_LETTER_RETENTION_MS = 56 * DAY_MS

EVENT_TYPES: dict[type[BaseModel], TopicSpec] = {spec.model: spec for spec in TOPICS + SIDE_TOPICS}
BY_NAME: dict[str, TopicSpec] = {spec.name: spec for spec in TOPICS + SIDE_TOPICS}
