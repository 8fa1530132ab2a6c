"""Request and response bodies. The seed's four endpoints keep the seed's field names
(``session_id``, ``scene_description``, ``shot_list``, ``quality_scores`` ...); shot and prompt
specs are the event models themselves, so the API and the topics mean the same thing."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from comfy.presets import PRESETS
from eventlog.follow import new_scene_id
from events.models import (
    AssembledShot,
    CharacterContinuity,
    CharacterSheets,
    CutContinuity,
    ExternalScores,
    Probability,
    PromptSpec,
    SceneId,
    SceneRequested,
    ShotSpec,
)

SessionId = Annotated[str, Field(min_length=1, max_length=128)]
Description = Annotated[str, Field(min_length=1, max_length=2000, description="What happens in the scene.")]
Character = Annotated[str, Field(min_length=1, max_length=64)]
Characters = Annotated[list[Character], Field(max_length=16, description="Names of the characters in the scene.")]
PresetName = Literal[tuple(PRESETS)]  # type: ignore[valid-type] - the shipped presets, listed in the OpenAPI
Style = Annotated[str, Field(min_length=1, max_length=64, description="Visual style, e.g. anime, ghibli, cyberpunk.")]


class _Body(BaseModel):
    # Stripped, so a whitespace-only description fails its min_length like an empty one.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # PostgreSQL text cannot hold NUL: refused here rather than accepted and dead-lettered later.
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(text, str) and "\x00" in text for text in texts):
            raise ValueError("must not contain NUL characters")
        return value


class PlanRequest(_Body):
    """The seed's ``scene/plan`` body: ``{"session_id": "test", "scene_description": "test scene"}``."""

    session_id: SessionId
    scene_description: Description
    characters: Characters = Field(default_factory=list)
    style: Style = "anime"
    target_duration_s: Annotated[float, Field(ge=1, le=300)] | None = Field(
        None, description="Scene length to plan for: the shot durations sum to it (within 0.5 s)."
    )
    render_preset: PresetName | None = Field(
        None, description="The ComfyUI render preset of this scene (docs/MODELS.md; `tower models` says which a "
        "server can run); unset: the renderer's TOWER_RENDER_PRESET or workflow. Only the comfyui backend uses it.")


class PlanResponse(BaseModel):
    session_id: str
    shot_list: list[ShotSpec]
    overall_mood: str
    lighting_suggestions: str
    genre: str
    notes: list[str] = Field(description="What the planner assumed or changed (detected characters, caps).")
    detected_characters: list[str] = Field(description="Characters found in the text but not in `characters`.")
    eta: SceneEta | None = Field(None, description="How long the scene would take, from finished scenes of the "
                                 "same workflow; null when there is none yet (`eta_note` says why).")
    eta_note: str | None = None


class SceneEta(BaseModel):
    seconds: float = Field(description="Estimated wall-clock seconds from request to the last shot's final score.")
    from_scenes: int = Field(description="Finished scenes of the workflow the estimate is made from (the latest 20).")
    workflow: str
    method: str = Field(description="`fit`: fixed + per planned frame (least squares); `per-frame`: the median "
                                    "seconds per planned frame.")


class EnhanceRequest(_Body):
    """A shot to write the generation prompt for: a scene description and which of its planned
    shots (optionally overriding the planned camera, mood, lighting or characters). The seed's
    client sends the text as ``prompt``: ``{"session_id": "s", "prompt": "Kai fights the dragon"}``."""

    session_id: SessionId
    scene_description: Description | None = Field(
        None, description="What happens in the scene. Required unless `prompt` gives it.")
    prompt: Description | None = Field(
        None, description="The text to enhance, as the seed's client names it: used as the scene description when "
        "`scene_description` is absent (`scene_description` wins when both are given).")
    shot_number: Annotated[int, Field(ge=1, le=64)] = 1
    characters: Characters = Field(default_factory=list)
    style: Style = "anime"
    camera_angle: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    mood: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    lighting: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    attempt: Annotated[int, Field(ge=1, le=10)] = Field(1, description="Which attempt at the shot (seeds the choice).")
    character_sheets: CharacterSheets = Field(
        default_factory=dict, description="Designs of characters (else the remembered or default ones).")

    @model_validator(mode="after")
    def _describes_the_scene(self) -> EnhanceRequest:
        self.scene_description = self.scene_description or self.prompt
        if self.scene_description is None:
            raise ValueError("give the text to enhance as scene_description (or as prompt, as the seed's client does)")
        return self


class EnhanceResponse(BaseModel):
    session_id: str
    shot: ShotSpec
    prompt: PromptSpec = Field(description="Prompt, negative prompt, sampler settings, and the modifier chosen "
                                           "from the current pattern table with its probability.")


class IntegrateRequest(PlanRequest):
    """Start the whole pipeline for a scene (``scene.requested``)."""

    scene_id: SceneId | None = Field(None, description="Default: a new one. Scene ids must be unique.")
    character_sheets: CharacterSheets = Field(
        default_factory=dict, description='A design per character, e.g. {"Kai": "tall, silver hair, red scarf"}: '
        "used in every shot and remembered for later scenes that name the character.")
    max_attempts: Annotated[int, Field(ge=1, le=10)] | None = None
    quality_threshold: Probability | None = None
    max_render_seconds: Annotated[float, Field(gt=0, le=1e7)] | None = Field(
        None, description="Render-time budget of the scene in seconds: once its renders would pass it, shots get no "
        "more retries and go to review (the reason says so); unset: the planner's TOWER_MAX_RENDER_SECONDS.")


def scene_request(body: IntegrateRequest, **extra: Any) -> SceneRequested:
    """The ``scene.requested`` event a ``workflow/integrate`` body asks for (a new scene id if it
    names none); ``extra``: the batch fields. The API and ``tower submit --file`` both use it."""
    return SceneRequested(
        scene_id=body.scene_id or new_scene_id(), session_id=body.session_id, description=body.scene_description,
        characters=list(body.characters), style=body.style, max_attempts=body.max_attempts,
        quality_threshold=body.quality_threshold, target_duration_s=body.target_duration_s,
        character_sheets=body.character_sheets, render_preset=body.render_preset,
        max_render_seconds=body.max_render_seconds, **extra,
    )


class Links(BaseModel):
    scene: str
    events: str
    session: str


class RegenerateRequest(BaseModel):
    """A person's direction for one shot's next attempt; every field is optional."""

    model_config = ConfigDict(extra="forbid")

    note: Annotated[str, Field(max_length=1000, pattern=r"^[^\x00]*$")] | None = Field(
        None, description="What to change, in words; added to the generation prompt.")
    prompt: Annotated[str, Field(min_length=1, max_length=4000, pattern=r"^[^\x00]*$")] | None = Field(
        None, description="A generation prompt to use instead of the refined one.")
    seed: Annotated[int, Field(ge=0, lt=2**32)] | None = None
    modifier: Annotated[str, Field(max_length=200, pattern=r"^[^\x00]*$")] | None = Field(
        None, description="The prompt pattern (see GET /api/director/patterns); unset: the one of the attempt cut in.")


class RegenerateResponse(BaseModel):
    status: Literal["accepted", "already_requested"]
    scene_id: str
    shot_number: int
    attempt: int = Field(description="The new attempt's number; the scene is cut again once it is scored.")
    event_id: str
    links: Links


class ReassembleResponse(BaseModel):
    status: Literal["accepted"] = "accepted"
    scene_id: str
    event_id: str = Field(description="The scene.reassemble event; a new scene.assembled (the same files) follows.")
    links: Links


class IntegrateResponse(BaseModel):
    status: Literal["accepted"] = "accepted"
    session_id: str
    scene_id: str
    event_id: str
    links: Links


class FeedbackRequest(_Body):
    """Scores from outside Tower (the seed's ``quality_scores``) and/or a person's rating, of one
    attempt of a shot or, without ``shot_number``, of a whole scene. Scene feedback applies to the
    scene's accepted shots (each shot whose best scored attempt passed), which share its weight: it
    counts as one judgement, however many shots the scene has. The seed's client sends
    ``{"session_id": "...", "quality_scores": {"ssim": 0.85, "consistency": 0.90}}``: the session's
    latest scene."""

    scene_id: SceneId | None = Field(None, description="Default: the latest scene of `session_id`.")
    shot_number: Annotated[int, Field(ge=1, le=64)] | None = Field(
        None, description="Default: the whole scene, i.e. each of its accepted shots, sharing the feedback's weight."
    )
    attempt: Annotated[int, Field(ge=1, le=10)] | None = Field(
        None, description="Default: the shot's best scored attempt (else its latest). Only with `shot_number`."
    )
    session_id: SessionId | None = Field(
        None, description="Checked against the scene's session when both are given; alone, it names the session "
        "whose latest scene is judged."
    )
    quality_scores: ExternalScores | None = None
    rating: Annotated[int, Field(ge=1, le=5)] | None = Field(None, description="A person's rating, 1 (bad) to 5.")
    comment: Annotated[str, Field(max_length=2000)] | None = None
    feedback_id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")] | None = Field(
        None, description="Idempotency key; default: derived from the content, so a resent request counts once."
    )

    @model_validator(mode="after")
    def _judges_something(self) -> FeedbackRequest:
        if self.rating is None and (self.quality_scores is None or not self.quality_scores.present()):
            raise ValueError("give a rating (1-5) or at least one of quality_scores.ssim, optical_flow, consistency")
        if self.scene_id is None and self.session_id is None:
            raise ValueError("name what is judged: scene_id, or session_id for the session's latest scene")
        if self.attempt is not None and self.shot_number is None:
            raise ValueError("attempt needs shot_number; leave both out to judge the scene's accepted shots")
        return self

    @property
    def scope(self) -> Literal["shot", "scene"]:
        return "scene" if self.shot_number is None else "shot"


class FeedbackShot(BaseModel):
    shot_number: int
    attempt: int
    context: str
    modifier: str
    weights: dict[str, float] = Field(
        description="The learning weight of this shot's evidence per source (human, external): the source's weight, "
        "divided by the number of shots for scene feedback.")


class FeedbackResponse(BaseModel):
    status: Literal["accepted"] = "accepted"
    scope: Literal["shot", "scene"] = Field(
        "shot", description="shot: one attempt was judged; scene: the scene as a whole, spread over `shots`.")
    feedback_id: str
    scene_id: str
    session_id: str
    shot_number: int | None = Field(None, description="The judged shot (shot scope only; see `shots`).")
    attempt: int | None = Field(None, description="The judged attempt (shot scope only).")
    context: str | None = Field(None, description="Its pattern context (shot scope only).")
    modifier: str | None = Field(None, description="Its modifier (shot scope only).")
    shots: list[FeedbackShot] = Field(default_factory=list, description="Each shot the feedback applies to.")
    events: list[dict[str, str]] = Field(description="Each event produced: its id and source (human / external).")


class BatchRequest(_Body):
    session_id: SessionId | None = Field(None, description="Default session of scenes that do not name one.")
    scenes: Annotated[list[dict[str, Any]], Field(min_length=1)] = Field(
        description="Scenes as workflow/integrate bodies (session_id may be left out)."
    )


class BatchResponse(BaseModel):
    status: Literal["accepted"] = "accepted"
    batch_id: str
    session_id: str
    scene_ids: list[str]
    links: dict[str, str]


class SceneSummary(BaseModel):
    scene_id: str
    session_id: str
    description: str
    characters: list[str]
    style: str
    requested_at: datetime
    batch_id: str | None = None
    status: Literal["requested", "running", "complete", "needs_review", "failed"]
    shot_count: int | None = None
    final_shots: int
    passed_shots: int
    mean_best_score: float | None = None
    failures: int = Field(0, description="Events of the scene that were dead-lettered (the scene cannot finish).")


class BatchProgress(BaseModel):
    batch_id: str
    size: int
    created_at: datetime
    queued: int
    running: int
    done: int
    needs_review: int
    failed: int
    scenes: list[SceneSummary]


class SessionRow(BaseModel):
    session_id: str
    created_at: datetime
    scene_count: int


class SessionList(BaseModel):
    total: int
    sessions: list[SessionRow]


class SessionHistory(SessionRow):
    scenes: list[SceneSummary]


class Frame(BaseModel):
    index: int
    url: str
    width: int
    height: int


class Score(BaseModel):
    status: str
    composite: float
    passed: bool
    final: bool
    metrics: dict[str, float]
    reason: str | None = None
    scorer_version: str | None = None
    device: str | None = None


class Attempt(BaseModel):
    attempt: int
    modifier: str | None = None
    modifier_probability: float | None = None
    context: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    render_status: str | None = None
    render_reason: str | None = None
    render_ms: float | None = None
    backend: str | None = None
    score: Score | None = None
    retry_reason: str | None = Field(None, description="Why this attempt was made (the previous one's outcome).")
    escalation: str | None = Field(
        None, description="What this attempt changed: `initial`, `new-seed`, `new-modifier`, `workflow-setting`, or "
        "`directed` (a person regenerated the shot).")
    frames: list[Frame]


class Shot(BaseModel):
    shot_number: int
    shot_count: int
    camera_angle: str
    camera_movement: str
    duration: float
    frame_count: int
    fps: int | None = Field(None, description="Frames per second of the shot's render.")
    characters: list[str]
    mood: str
    lighting: str
    action: str
    expected_motion: float
    quality_threshold: float | None = None
    max_attempts: int | None = None
    spec: dict[str, Any] | None = None
    accepted_attempt: int | None = Field(None, description="The best scored attempt, once the shot is final.")
    attempts: list[Attempt]


class FeedbackRow(BaseModel):
    feedback_id: str
    shot_number: int
    attempt: int
    source: str
    rating: int | None = None
    comment: str | None = None
    scores: dict[str, float]
    reward: float
    submitted_at: datetime


class Failure(BaseModel):
    original_topic: str
    original_partition: int
    original_offset: int
    event_id: str | None = None
    consumer: str
    error_class: str
    reason: str
    failed_at: datetime


class AssembledFile(BaseModel):
    url: str = Field(description="Where the API serves it.")
    uri: str = Field(description="Its path in the media store.")
    media_type: str
    sha256: str
    bytes: int


class SceneAssembly(BaseModel):
    """The scene's latest cut (`scene.assembled`): its files, the attempt used per shot, continuity."""

    event_id: str
    assembled_at: datetime
    assembly_version: str
    inputs_sha256: str
    fps: int
    width: int
    height: int
    frame_count: int
    duration_s: float
    video: AssembledFile
    storyboard: AssembledFile
    timeline: AssembledFile
    shots: list[AssembledShot]
    cuts: list[CutContinuity]
    characters: list[CharacterContinuity]
    discontinuities: int


class MemoryFeedback(BaseModel):
    count: int = Field(description="Feedback events on the attempt (human ratings and external scores).")
    mean_rating: float | None = Field(None, description="Mean of their 1-5 ratings; null when none carried one.")
    comment: str | None = Field(None, description="The latest comment, if any.")


class MemoryHit(BaseModel):
    scene_id: str
    shot_number: int
    attempt: int
    similarity: float = Field(description="Cosine similarity, -1 to 1: of the texts' embeddings, or with `by=look` "
                              "of the middle frames' image signatures.")
    composite: float
    passed: bool
    status: str
    modifier: str
    text: str = Field(description="What was remembered of the attempt: its plan and prompt pattern.")
    feedback: MemoryFeedback | None = Field(None, description="What people said of the attempt; null: nothing yet.")
    frame_url: str | None = Field(None, description="The attempt's middle frame in the media store.")
    scene_url: str


class MemorySearchResponse(BaseModel):
    query: str
    embedder: str = Field(description="Whose vectors were searched: the embedder's name/version, or the image "
                          "signature's with `by=look`.")
    searched: int = Field(description="Attempts in memory that were searched (an HNSW index; `by=look`: an exact "
                          "scan of the image signatures).")
    hits: list[MemoryHit]


class SceneDetail(BaseModel):
    scene: SceneSummary
    overall_mood: str | None = None
    lighting_suggestions: str | None = None
    shots: list[Shot]
    feedback: list[FeedbackRow]
    failures: list[Failure] = Field(description="Dead-lettered events of the scene, with the reason.")
    assembly: SceneAssembly | None = Field(
        None, description="The scene's video, storyboard and timeline once every shot is final and the editor has "
        "cut it (`scene.assembled`); null before.")


class PatternRow(BaseModel):
    context: str
    modifier: str
    mean: float
    lower_bound: float
    observations: int
    alpha: float
    beta: float
    sources: dict[str, int] = Field(description="Updates per evidence source: auto, human, external.")
    updated_at: datetime


class RecommendationRow(BaseModel):
    context: str
    best: str
    best_lower_bound: float
    probability_best: dict[str, float]
    stop: list[str] = Field(description="Modifiers whose probability of being best is under 5%.")


class PatternTableResponse(BaseModel):
    patterns: list[PatternRow]
    recommendations: list[RecommendationRow]


class TrendRow(BaseModel):
    bucket_start: datetime = Field(description="Start of the bucket (UTC): the day, or the hour with bucket=hour.")
    day: date
    key: str
    attempts: int
    mean_score: float | None = None
    pass_rate: float | None = None
    failed: int


class TrendResponse(BaseModel):
    by: Literal["day", "pattern", "workflow"]
    bucket: Literal["day", "hour"] = "day"
    days: int
    rows: list[TrendRow]


class Readiness(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str]


class Health(BaseModel):
    status: Literal["ok"]
