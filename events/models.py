"""One pydantic v2 model per topic: the JSON value of each message.

Values are plain compact JSON (no framework metadata), so any consumer can read them. Within a
version only additive, optional changes are allowed; a breaking change is a new ``ce_type``
version (see :mod:`events.topics`). Every model after ``scene.requested`` carries the whole shot
attempt it belongs to, so one event is enough to act on, to display, or to replay.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SceneId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
# Bounds of what the projections store (PostgreSQL integers): an event past them could never be
# handled, so it is refused when decoded (and dead-lettered at once) rather than after retries.
MAX_SHOTS = 1_000
MAX_ATTEMPTS = 100
MAX_FRAMES = 100_000


# Short names (camera angle, mood, modifier ...): they form pattern contexts and index keys.
Label = Annotated[str, Field(max_length=200)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        # PostgreSQL text cannot hold NUL: an event carrying one could never be projected.
        # Runs for every field of every event a stage decodes or builds, so the common cases
        # (a string, a number, a nested model) are decided without building anything.
        if isinstance(value, str):
            texts: Iterable[object] = (value,)
        elif isinstance(value, dict):
            texts = itertools.chain(value, value.values())
        elif isinstance(value, list):
            texts = value
        else:
            return value
        for text in texts:
            if isinstance(text, str) and "\x00" in text:
                raise ValueError("text must not contain NUL characters")
        return value


class _Event(_Model):
    scene_id: SceneId
    session_id: Annotated[str, Field(min_length=1, max_length=128)]


CharacterSheets = Annotated[
    dict[Annotated[str, Field(min_length=1, max_length=64)], Annotated[str, Field(min_length=1, max_length=500)]],
    Field(max_length=64),
]


class SceneRequested(_Event):
    """``scene.requested``: a person or a service asks for a scene."""

    description: Annotated[str, Field(min_length=1, max_length=2000)]
    characters: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list)
    style: Label = "anime"
    max_attempts: Annotated[int, Field(ge=1, le=10)] | None = Field(
        None, description="Attempt budget per shot; unset: the planner's TOWER_MAX_ATTEMPTS."
    )
    quality_threshold: Probability | None = Field(
        None, description="Retry under this composite score; unset: the planner's TOWER_QUALITY_THRESHOLD."
    )
    batch_id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")] | None = Field(
        None, description="The batch this scene was submitted in, if any."
    )
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] | None = Field(None, description="How many scenes the batch has.")
    character_sheets: CharacterSheets = Field(
        default_factory=dict,
        description="A design per character name (\"Kai\": \"tall, silver hair, red scarf\"): used in every shot, "
        "and kept for later scenes and sessions that name the character.",
    )
    target_duration_s: Annotated[float, Field(ge=1.0, le=300.0)] | None = Field(
        None, description="Wanted length of the whole scene in seconds; unset: the planner's own pacing."
    )
    max_render_seconds: Annotated[float, Field(gt=0, le=1e7)] | None = Field(
        None, description="Render-time budget of the whole scene in seconds: once its renders would pass it, a shot "
        "gets no more retries and goes to review; unset: the planner's TOWER_MAX_RENDER_SECONDS (none: no budget).",
    )
    render_preset: Label | None = Field(
        None, description="The ComfyUI render preset of this scene's shots (`anime-sd15`, `anime-sdxl`, `anime-ref`, "
        "`video-wan22-5b`, `video-ltxv`: docs/MODELS.md); unset: the renderer's TOWER_RENDER_PRESET or workflow.",
    )

    @field_validator("description")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the description is blank")
        return value


class ShotSpec(_Model):
    """One planned shot, as the seed's ``shot_list`` entries plus what rendering needs."""

    shot_number: Annotated[int, Field(ge=1, le=MAX_SHOTS)]
    shot_count: Annotated[int, Field(ge=1, le=MAX_SHOTS)]
    camera_angle: Label
    camera_movement: Label
    duration: Annotated[float, Field(gt=0, le=60)]
    fps: Annotated[int, Field(ge=1, le=60)]
    frame_count: Annotated[int, Field(ge=1, le=600)]
    characters: list[str]
    mood: Label
    lighting: Label
    action: str
    description: str
    continuity_notes: str = ""
    setting: Annotated[str, Field(max_length=200)] = Field("", description="Where the shot takes place.")
    time_of_day: Annotated[str, Field(max_length=100)] = ""
    palette: Annotated[str, Field(max_length=200)] = Field(
        "", description="The scene's colour palette, the same for every shot of the scene."
    )
    expected_motion: Probability = Field(
        description="How much the shot should move: 0 a still establishing shot, 1 fast action."
    )


# What an attempt changes against the shot's earlier ones (the escalation ladder, see
# director.escalation): the first attempt, then a new seed, a new modifier, another sampler setting;
# or a person's regeneration of the shot ("directed", with its `direction`).
Escalation = Literal["initial", "new-seed", "new-modifier", "workflow-setting", "directed"]


class Direction(_Model):
    """A person's direction for regenerating one shot: what to change, and why."""

    note: Annotated[str, Field(max_length=1000)] | None = Field(
        None, description="What the person wants (\"less motion blur, Kai's scarf red\"): added to the prompt.")
    prompt: Annotated[str, Field(min_length=1, max_length=4000)] | None = Field(
        None, description="A generation prompt to use instead of the refined one.")
    seed: Annotated[int, Field(ge=0, lt=2**32)] | None = Field(None, description="The seed to render with.")
    modifier: Label | None = Field(None, description="The prompt pattern to use; unset: the one of the attempt cut in.")


class _ShotAttempt(_Event):
    attempt: Annotated[int, Field(ge=1, le=MAX_ATTEMPTS)]
    max_attempts: Annotated[int, Field(ge=1, le=MAX_ATTEMPTS)]
    quality_threshold: Probability
    shot: ShotSpec
    tried_modifiers: list[Label] = Field(
        default_factory=list, description="Modifiers of earlier attempts at this shot."
    )
    style: Label = "anime"
    escalation: Escalation = Field(
        "initial",
        description="What this attempt changes: `initial` (the policy's choice over every modifier), "
        "`new-seed` (same modifier and settings, another seed), `new-modifier` (an untried modifier), "
        "`workflow-setting` (the best modifier so far with more steps and another cfg), `directed` (a person "
        "regenerated the shot with a `direction`: not the policy's choice, so never credited to a pattern).",
    )
    retry_reason: Annotated[str, Field(max_length=1000)] | None = Field(
        None, description="Why this attempt was made (retries only)."
    )
    keep_modifier: Label | None = Field(
        None, description="The modifier a `new-seed` or `workflow-setting` attempt keeps."
    )
    character_sheets: CharacterSheets = Field(
        default_factory=dict, description="The designs of the scene's characters (given or remembered)."
    )
    direction: Direction | None = Field(None, description="A person's direction (`directed` attempts only).")
    render_preset: Label | None = Field(
        None, description="The scene's ComfyUI render preset; unset: the renderer's own (TOWER_RENDER_PRESET)."
    )
    max_render_seconds: Annotated[float, Field(gt=0, le=1e7)] | None = Field(
        None, description="The scene's render-time budget in seconds (none: no budget)."
    )


class ShotPlanned(_ShotAttempt):
    """``shot.planned``: a shot to attempt (attempt 1 from the planner, retries from the retry controller)."""

    overall_mood: str
    lighting_suggestions: str
    plan_notes: list[str] = Field(
        default_factory=list, description="What the planner assumed or found (characters, time, place, caps)."
    )
    planner: Label = Field("builtin", description="Which planner made the plan: `builtin` or `llm`.")
    planner_fallback_reason: Annotated[str, Field(max_length=1000)] | None = Field(
        None, description="Why the LLM planner's plan was not used (the built-in one was)."
    )


class PromptSpec(_Model):
    """What the refiner decided for one attempt: the generation prompt and sampler settings."""

    prompt: str
    negative_prompt: str
    seed: Annotated[int, Field(ge=0, lt=2**32)]
    steps: Annotated[int, Field(ge=1, le=200)]
    cfg: Annotated[float, Field(gt=0, le=30)]
    sampler: Label
    width: Annotated[int, Field(ge=16, le=4096)]
    height: Annotated[int, Field(ge=16, le=4096)]
    context: Annotated[str, Field(max_length=1000)] = Field(
        description="Pattern context: shot type x mood x lighting x workflow."
    )
    camera_motion: Annotated[float, Field(ge=0, le=2)] = Field(
        0.5, description="How far the camera moves per frame, relative to a tracking shot (0 static, 1 tracking): "
        "the shot's camera movement as a render parameter, not as prompt words.",
    )
    motion_strength: Probability = Field(
        0.5, description="How much the picture should move (the shot's expected motion x the modifier's gain): "
        "a video model's motion parameter (ComfyUI's motion_bucket_id).",
    )
    budget_stop: Annotated[str, Field(max_length=500)] | None = Field(
        None, description="Why this is the shot's last attempt although attempts remain: the scene's render budget "
        "would be spent by another (set by the refiner; the attempt is final once scored).",
    )
    modifier: Label = Field(description="The prompt pattern chosen for this attempt.")
    modifier_probability: Probability = Field(
        description="Estimated probability that Thompson sampling picks this modifier."
    )
    learner_version: Label


class PromptRefined(_ShotAttempt):
    """``prompt.refined``: a shot attempt with its refined prompt."""

    prompt: PromptSpec


class ShotReviewRequested(_Event):
    """``shot.review``: a shot spent its attempt budget under its threshold; a person should look.

    The best attempt is the accepted one; this event says which, and why the shot is escalated.
    """

    shot_number: Annotated[int, Field(ge=1, le=MAX_SHOTS)]
    attempts: Annotated[int, Field(ge=1, le=MAX_ATTEMPTS)]
    quality_threshold: Probability
    best_attempt: Annotated[int, Field(ge=1, le=MAX_ATTEMPTS)] | None = Field(
        None, description="The attempt with the highest composite (none if no attempt was scored)."
    )
    best_composite: Probability | None = None
    reason: Annotated[str, Field(max_length=1000)]


class RegressionDetected(_Event):
    """``quality.alerts``: a workflow (render model) version scores significantly worse than the
    version before it. ``scene_id`` is the scene whose score revealed it."""

    workflow: Label
    previous_workflow: Label
    mean: Probability
    previous_mean: Probability
    samples: Annotated[int, Field(ge=1)]
    previous_samples: Annotated[int, Field(ge=1)]
    p_value: Probability
    reason: Annotated[str, Field(max_length=1000)]


class FrameRef(_Model):
    index: Annotated[int, Field(ge=0, le=MAX_FRAMES)]
    uri: str = Field(description="Path of the frame, relative to the media store root.")
    width: Annotated[int, Field(ge=1, le=65_535)]
    height: Annotated[int, Field(ge=1, le=65_535)]
    sha256: str


class FrameRendered(_ShotAttempt):
    """``frame.rendered``: the frames of one attempt (or why there are none)."""

    prompt: PromptSpec
    status: Literal["ok", "failed"]
    reason: str | None = None
    backend: Label
    frames: list[FrameRef] = Field(default_factory=list)
    render_ms: Annotated[float, Field(ge=0)] = 0.0


class QualityScored(_ShotAttempt):
    """``quality.scored``: the scores of one attempt; the learner's and the retry controller's input."""

    prompt: PromptSpec
    status: Literal["ok", "failed"]
    reason: str | None = None
    composite: Probability = 0.0
    passed: bool = False
    metrics: dict[str, float] = Field(default_factory=dict)
    frame_count: Annotated[int, Field(ge=0, le=MAX_FRAMES)] = 0
    scorer_version: Label
    device: Label
    frames: list[FrameRef] = Field(
        default_factory=list, description="The frames scored (the attempt's `frame.rendered` frames, verified by "
        "sha256): what the editor cuts the scene from. Empty when the render failed.",
    )
    signature: Annotated[list[float], Field(max_length=256)] | None = Field(
        None, description="A weight-free signature of how the attempt's middle frame looks (unit length; its dot "
        "product with another's is their likeness), for the memory's `similar?by=look`. Absent when the render "
        "failed, and from scorers before it existed.",
    )
    signature_version: Label | None = None


class RenderProgress(_Event):
    """``render.progress``: best-effort progress of one attempt's render, for people watching.

    Not part of the pipeline's chain (no agent consumes it), so it may be lost or repeated.
    """

    shot_number: Annotated[int, Field(ge=1)]
    attempt: Annotated[int, Field(ge=1)]
    backend: Label
    kind: Literal["queued", "started", "cached", "executing", "progress", "finished"]
    fraction: Probability | None = None
    step: int | None = None
    steps: int | None = None
    queue_position: int | None = None
    server: str | None = None


class ExternalScores(_Model):
    """Scores of an attempt measured outside Tower, in the seed's ``quality_scores`` shape."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ssim: Probability | None = None
    optical_flow: Probability | None = None
    consistency: Probability | None = None

    def present(self) -> dict[str, float]:
        return {name: value for name, value in self.model_dump().items() if value is not None}


class FeedbackSubmitted(_Event):
    """``feedback.submitted``: a judgement of one attempt from outside the pipeline.

    ``source`` is ``human`` (a 1-5 rating, optionally with a comment) or ``external`` (scores
    another system measured). The attempt's pattern ``context`` and ``modifier`` are copied from
    the projections when the feedback is accepted, so the event alone is enough to learn from
    (and to replay). Feedback on a whole scene becomes one event per accepted shot, each saying
    over how many shots it was spread (``scene_shots``), so together they weigh as one judgement.
    """

    feedback_id: Annotated[str, Field(min_length=1, max_length=128)]
    shot_number: Annotated[int, Field(ge=1, le=MAX_SHOTS)]
    attempt: Annotated[int, Field(ge=1, le=MAX_ATTEMPTS)]
    source: Literal["human", "external"]
    rating: Annotated[int, Field(ge=1, le=5)] | None = None
    comment: Annotated[str, Field(max_length=2000)] | None = None
    scores: ExternalScores = Field(default_factory=ExternalScores)
    context: Annotated[str, Field(min_length=1, max_length=1000)]
    modifier: Annotated[str, Field(min_length=1, max_length=200)]
    scene_shots: Annotated[int, Field(ge=1, le=MAX_SHOTS)] | None = Field(
        None, description="Set when the feedback was given for the scene as a whole and spread over this many "
        "accepted shots (one event each): each counts 1/scene_shots of its source weight. Unset: this shot's own.")

    @model_validator(mode="after")
    def _judges_something(self) -> FeedbackSubmitted:
        if self.source == "human" and self.rating is None:
            raise ValueError("human feedback needs a rating (1-5)")
        if self.source == "external" and not self.scores.present():
            raise ValueError("external feedback needs at least one of ssim, optical_flow, consistency")
        return self


class MediaFile(_Model):
    """A file the editor wrote into the media store."""

    uri: str = Field(description="Path relative to the media store root.")
    media_type: Label
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    bytes: Annotated[int, Field(ge=0)]


class AssembledShot(_Model):
    """One shot of an assembled scene: which attempt was cut in, and where it sits in the video."""

    shot_number: Annotated[int, Field(ge=1, le=MAX_SHOTS)]
    attempt: Annotated[int, Field(ge=1, le=MAX_ATTEMPTS)] | None = Field(
        description="The attempt cut in (the passing one, else the best scored); none: no attempt could be scored "
        "and the shot is a slate.")
    outcome: Literal["accepted", "needs_review", "missing"]
    modifier: Label | None = None
    composite: Probability | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    camera_angle: Label
    camera_movement: Label
    action: Annotated[str, Field(max_length=2000)] = ""
    start_frame: Annotated[int, Field(ge=0, le=MAX_FRAMES * MAX_SHOTS)]
    frame_count: Annotated[int, Field(ge=1, le=MAX_FRAMES)]
    duration_s: Annotated[float, Field(gt=0)]
    source_frames: Annotated[int, Field(ge=0, le=MAX_FRAMES)] = Field(
        description="Frames the attempt rendered; retimed to `frame_count` (the plan's duration at the scene's fps).")


class CutContinuity(_Model):
    """How alike the two sides of a cut look, by weight-free measures (see docs/ARCHITECTURE.md)."""

    after_shot: Annotated[int, Field(ge=1, le=MAX_SHOTS)]
    colour_distance: Annotated[float, Field(ge=0)] = Field(
        description="Distance between the colour statistics (CIELAB mean and spread) of the frames either side, in "
        "Delta E units: 0 the same, about 2 just noticeable, over 20 or so another palette.")
    hash_distance: Annotated[float, Field(ge=0, le=1)] = Field(
        description="Share of perceptual-hash bits that differ between the keyframes either side.")
    discontinuity: bool
    reason: Annotated[str, Field(max_length=1000)] | None = None


class CharacterContinuity(_Model):
    """How alike a character's shots look, colour for colour (no detector: the whole frame)."""

    character: Annotated[str, Field(max_length=64)]
    shots: list[Annotated[int, Field(ge=1, le=MAX_SHOTS)]]
    max_colour_distance: Annotated[float, Field(ge=0)]
    discontinuity: bool


class SceneAssembled(_Event):
    """``scene.assembled``: every shot of the scene is final and the editor has cut it together:
    the video, the storyboard and the timeline, with what went into them."""

    assembly_version: Label
    inputs_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] = Field(
        description="Digest of what was assembled (the attempts and their frames, the version): the same inputs "
        "give the same digest, event id and bytes.")
    fps: Annotated[int, Field(ge=1, le=60)]
    width: Annotated[int, Field(ge=2, le=8192)]
    height: Annotated[int, Field(ge=2, le=8192)]
    frame_count: Annotated[int, Field(ge=1, le=MAX_FRAMES * MAX_SHOTS)]
    duration_s: Annotated[float, Field(gt=0)]
    video: MediaFile
    storyboard: MediaFile
    timeline: MediaFile
    shots: list[AssembledShot]
    cuts: list[CutContinuity] = Field(default_factory=list)
    characters: list[CharacterContinuity] = Field(default_factory=list)
    discontinuities: Annotated[int, Field(ge=0)] = 0


class ReassemblyRequested(_Event):
    """``scene.reassemble``: cut a scene's film again from the attempts already chosen (its files
    were lost, or the media store moved). The same inputs give the same files and the same
    ``scene.assembled`` event."""

    reason: Annotated[str, Field(max_length=1000)] | None = Field(None, description="Why, for the log.")
