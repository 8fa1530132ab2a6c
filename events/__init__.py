"""The event contract: one pydantic model per topic, the envelope, the codec, the topics.

This package imports nothing else of Tower's, so other services can vendor it (or use the
exported JSON Schemas, ``tower schemas export``) to produce and consume Tower's events.
"""

from events.envelope import Envelope, EnvelopeError, derive_event_id
from events.models import (
    FrameRef,
    FrameRendered,
    PromptRefined,
    PromptSpec,
    QualityScored,
    RenderProgress,
    SceneRequested,
    ShotPlanned,
    ShotSpec,
)
from events.topics import EVENT_TYPES, TOPICS, TopicSpec, dead_letter_topic

__all__ = [
    "EVENT_TYPES",
    "TOPICS",
    "Envelope",
    "EnvelopeError",
    "FrameRef",
    "FrameRendered",
    "PromptRefined",
    "PromptSpec",
    "QualityScored",
    "RenderProgress",
    "SceneRequested",
    "ShotPlanned",
    "ShotSpec",
    "TopicSpec",
    "dead_letter_topic",
    "derive_event_id",
]
