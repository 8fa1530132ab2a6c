"""One typed settings object; every field is an env var with the ``TOWER_`` prefix.

The README's settings table lists the same fields; ``tower settings`` prints the values in force.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOWER_", extra="ignore")

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port].")
    database_url: str = Field(
        "postgresql://tower@127.0.0.1:5433/tower", description="PostgreSQL URL (asyncpg/libpq form)."
    )
    topic_prefix: str = Field("", description="Prefix for every topic name (tenants, tests).")
    group_prefix: str = Field("tower", description="Prefix of each stage's Faust app id = consumer group.")
    media_dir: Path = Field(Path("media"), description="Root of the media store (rendered frames).")
    state_dir: Path = Field(Path(".tower/state"), description="Local worker state (Faust's data directories).")

    render_backend: Literal["procedural", "comfyui", "sleep", "simulated"] = Field(
        "procedural",
        description="Render backend: `procedural` is the built-in CPU renderer, `comfyui` renders on "
        "ComfyUI servers (docs/COMFYUI.md); `sleep` is a fake for benchmarks (waits "
        "TOWER_SLEEP_RENDER_S, writes tiny blank frames) that measures the pipeline's parallelism alone; "
        "`simulated` is a simulated model for the learning benchmark (procedural frames, per-context response "
        "from a seeded table, render/simulated.py).",
    )
    simulated_model: int = Field(
        1, ge=1, le=2, description="The `simulated` backend's model version: 2 is a changed model that scores worse.")
    render_in_flight: int | None = Field(
        None, ge=1, le=256,
        description="Renders one renderer worker runs at once; unset: the ComfyUI pool's capacity "
        "(TOWER_COMFY_MAX_IN_FLIGHT x servers) for comfyui, 4 for sleep, 1 for procedural (CPU-bound).",
    )
    sleep_render_s: float = Field(1.0, ge=0, le=600, description="How long the `sleep` fake backend takes per render.")
    comfy_urls: str = Field(
        "http://127.0.0.1:8188", description="ComfyUI servers of the comfyui backend, comma-separated base URLs."
    )
    comfy_workflow: Path | None = Field(
        None, description="Workflow template (API- or UI-format JSON); unset: the built-in model-free template."
    )
    render_preset: str | None = Field(
        None, description="A render preset of the comfyui backend, in place of TOWER_COMFY_WORKFLOW: `anime-sd15`, "
        "`anime-sdxl`, `anime-ref`, `video-wan22-5b`, `video-ltxv` (docs/MODELS.md; `tower models` says which can run).",
    )
    comfy_models: dict[str, str] = Field(
        default_factory=dict, description="Your model file for a preset's role, as JSON: "
        "`{\"sd15-checkpoint\": \"myAnime_v3.safetensors\"}`; unset roles load the published files (docs/MODELS.md).",
    )
    comfy_timeout_s: float = Field(
        600.0, gt=0, description="Deadline of one ComfyUI render, retries included; then it is interrupted and dequeued."
    )
    comfy_max_in_flight: int = Field(2, ge=1, description="Jobs queued or running at once per ComfyUI server.")
    comfy_references_dir: Path | None = Field(
        None, description="Character reference images (<character>.png|jpg|webp) uploaded into LoadImage nodes."
    )
    render_width: int = Field(256, ge=32, le=4096, description="Frame width in pixels.")
    render_height: int = Field(256, ge=32, le=4096, description="Frame height in pixels.")
    render_max_steps: int = Field(
        60, ge=1, le=200, description="Most sampler steps an attempt gets (the refiner's own range is 24-36): "
        "lower for drafts, 1-2 to run a real model on CPU.",
    )
    render_fps: int = Field(4, ge=1, le=60, description="Frames per second of a rendered shot.")

    plan_in_flight: int = Field(
        4, ge=1, le=64, description="Scenes one planner worker plans at once: their produce acknowledgements (and "
        "LLM calls) overlap (offsets committed only past completed work, in order; one scene's events in order).",
    )
    refine_in_flight: int = Field(
        4, ge=1, le=64, description="Shots one refiner worker refines at once: their database round trips overlap "
        "(offsets committed only past completed work, in order; a shot's attempts one after another).",
    )
    learn_in_flight: int = Field(
        4, ge=1, le=64, description="Events of one topic one learner worker projects at once: their database commits "
        "overlap (offsets committed only past completed work, in order; a shot's events one after another).",
    )
    retry_in_flight: int = Field(
        4, ge=1, le=64, description="Scores one retry controller worker decides at once: their database round trips "
        "and produce acknowledgements overlap (offsets committed only past completed work; a shot's attempts in order).",
    )
    edit_in_flight: int = Field(
        2, ge=1, le=16, description="Scores one editor worker reads at once; a scene is cut in a thread, so a long "
        "encode does not stop the others (a shot's attempts in order).",
    )
    editor_crossfade_frames: int = Field(
        0, ge=0, le=120, description="Frames of dissolve before each cut of an assembled scene; 0: hard cuts. "
        "Every shot keeps its planned length.",
    )
    editor_continuity_threshold: float = Field(
        20.0, gt=0, le=300, description="Colour distance (CIELAB Delta E of the frames' colour statistics) over which "
        "a cut, or a character's shots, are reported as a continuity break in `scene.assembled` and on the panel.",
    )
    scorer_device: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="Scoring device: `auto` takes CUDA when there is one."
    )
    score_in_flight: int = Field(
        1, ge=1, le=64, description="Shots one scorer worker scores at once (more helps a device that is not busy; "
        "on a CPU the cores are shared either way).",
    )
    scorer_weights: dict[str, float | str] = Field(
        default_factory=dict,
        description='Composite weights as JSON, e.g. {"motion": 0.4, "consistency": 0.1}; unset ones keep '
        "their defaults (docs/SCORING.md).",
    )
    quality_threshold: float = Field(
        0.6, ge=0, le=1, description="Composite score under which a shot is retried (per scene default)."
    )
    max_attempts: int = Field(3, ge=1, le=10, description="Attempt budget per shot (per scene default).")
    max_render_seconds: float | None = Field(
        None, gt=0, description="Render-time budget per scene in seconds (per scene default): once a scene's renders "
        "would pass it, its shots get no more retries and go to review; unset: no budget.",
    )
    learner_version: str = Field("1", description="Seeds the refiner's sampling; bump to re-explore.")
    planner: Literal["builtin", "llm"] = Field(
        "builtin", description="The planner: `builtin` (film grammar, deterministic) or `llm` (an OpenAI-compatible "
        "chat endpoint, JSON-schema constrained; falls back to the built-in plan, saying why, on any failure).",
    )
    planner_llm_url: str = Field(
        "http://127.0.0.1:11434/v1", description="The LLM planner's OpenAI-compatible API base (Ollama's default; "
        "llama.cpp server: http://127.0.0.1:8080/v1).",
    )
    planner_llm_model: str = Field("llama3.2", description="The model the LLM planner asks for.")
    planner_llm_timeout_s: float = Field(20.0, gt=0, le=600, description="How long the LLM planner waits for a plan.")
    planner_llm_api_key: SecretStr | None = Field(None, description="Bearer token for the LLM endpoint, if it needs one.")
    refiner_policy: str = Field(
        "thompson", pattern=r"^(thompson|uniform|fixed:[a-z-]+)$",
        description="How the refiner chooses a modifier: `thompson` (learn from the patterns), `uniform` (at "
        "random) or `fixed:<modifier>`: the baselines to compare learning with (`make bench-learning`).",
    )
    borrowed_strength: float = Field(
        2.0, ge=0, le=1000,
        description="At most this many scores' worth of evidence a context borrows from related contexts "
        "(same workflow, and same camera angle or mood) as its prior; 0: every context starts from Beta(1, 1).",
    )
    memory_prior_strength: float = Field(
        0.0, ge=0, le=1000,
        description="At most this many scores' worth of prior evidence per modifier from the shot's nearest "
        "remembered shots (same workflow, first attempts; weighted by similarity), beside the borrowed prior; "
        "0: off. Read by the refiner.",
    )
    memory_prior_k: int = Field(20, ge=1, le=1000, description="How many remembered shots the memory prior reads.")
    memory_embedder: Literal["built-in", "server"] = Field(
        "built-in",
        description="Whose vectors the memory searches: `built-in` (hashed word and character n-grams, no model "
        "needed) or `server` (an OpenAI-compatible `/v1/embeddings` at TOWER_EMBEDDINGS_URL, by meaning). The "
        "built-in vectors are always kept; the learner embeds each remembered attempt with the server too, and "
        "`tower memory reembed` fills in what it missed.",
    )
    embeddings_url: str = Field(
        "http://127.0.0.1:8080/v1", description="The server embedder's OpenAI-compatible API base (llama.cpp's "
        "server with `--embedding`; Ollama: http://127.0.0.1:11434/v1).",
    )
    embeddings_model: str = Field("all-minilm", description="The model the server embedder asks for.")
    embeddings_timeout_s: float = Field(30.0, gt=0, le=600, description="How long one embeddings request may take.")
    embeddings_api_key: SecretStr | None = Field(None, description="Bearer token for the embeddings endpoint, if any.")
    max_score_precision: float = Field(
        8.0, ge=1, le=1000,
        description="One score counts as at most this many coin flips in the Beta posterior, as many as the "
        "scores' measured spread allows (a steady score says more than a flip); 1: the plain fractional update.",
    )
    learning_half_life_days: float | None = Field(
        None, gt=0, le=36500,
        description="Discount evidence by age when deciding: it counts half after this many days, so a changed "
        "model is re-learned; unset: all evidence counts fully. The stored table stays exact either way.",
    )
    learner_emits_alerts: bool = Field(
        True, description="Whether the learner publishes regression alerts on `quality.alerts`; false to retrain "
        "from a replay without announcing them again.",
    )

    replication_factor: int | None = Field(
        None, ge=1, le=10,
        description="Replicas of every topic Tower creates; unset: what the cluster can hold (3, or its broker count).",
    )
    min_insync_replicas: int | None = Field(
        None, ge=1, le=10,
        description="min.insync.replicas of Tower's topics (with acks=all, how many copies a write needs); "
        "unset: 2 with three or more replicas, else 1.",
    )
    max_message_bytes: int = Field(
        1_048_588, ge=65_536,
        description="Largest message the producers send: the broker's max.message.bytes (Kafka's default 1048588).",
    )
    handler_retries: int = Field(3, ge=0, description="Retries of a failing handler before dead-lettering.")
    handler_backoff_s: float = Field(0.2, ge=0, description="First retry delay; doubles per retry (at most 10 s).")
    commit_interval_s: float = Field(1.0, gt=0, description="How often agents commit consumer offsets.")
    worker_id: str | None = Field(
        None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$",
        description="A stable name for this worker process, unique among the workers of a stage (e.g. a "
        "StatefulSet pod name): it makes the worker a static group member (group.instance.id), so a restart "
        "under the same name takes its partitions back at once, without waiting for the session timeout.",
    )
    topic_partitions: int = Field(
        12, ge=1, le=1000,
        description="Partitions of each pipeline and side topic created by `tower topics create`: the most "
        "worker processes of one stage that can share its work (dead-letter topics have 1).",
    )
    session_timeout_s: float = Field(
        30.0, gt=0, description="Consumer session timeout: how soon a crashed worker's partitions move on."
    )

    metrics_port: int | None = Field(
        None, ge=0, le=65535,
        description="Port of a worker process's Prometheus /metrics (unset: none; 0: any free port, logged).",
    )

    metrics_host: str = Field(
        "127.0.0.1", description="Address a worker's /metrics binds; 0.0.0.0 for a Prometheus on another host."
    )

    api_host: str = Field("127.0.0.1", description="Address `tower api` binds; a non-loopback one needs TOWER_API_TOKEN.")
    api_port: int = Field(8328, ge=1, le=65535, description="Port of `tower api` (the seed's Tower port).")
    api_token: SecretStr | None = Field(
        None, description="Bearer token required on every write (and on reads with TOWER_API_PROTECT_READS)."
    )
    api_protect_reads: bool = Field(False, description="Whether reads need the bearer token too.")
    api_cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS, comma-separated; unset: CORS off."
    )
    api_max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="Largest request body the API accepts.")
    api_max_batch_scenes: int = Field(500, ge=1, le=100_000, description="Most scenes in one batch.")
    panel_dir: Path | None = Field(
        None, description="Built DirectorPanel served at / by the API; unset: panel/dist of this checkout."
    )
    api_scene_wait_s: float = Field(
        20.0, ge=0, description="How long the live event stream, and at most a scene or session read with ?wait=, "
        "waits for a just-submitted scene to be projected (workers that are just starting take several seconds to "
        "join their groups)."
    )
    api_live_scenes: int = Field(
        256, ge=1, description="Scenes whose events the API's live tail keeps in memory for late and reconnecting "
        "watchers (the least recently watched unwatched ones are forgotten first, then read again from Kafka).")
    api_live_buffer: int = Field(
        20_000, ge=100, description="Events of one unwatched scene the live tail keeps; a longer scene is "
        "forgotten until watched again.")
    api_live_queue: int = Field(
        2_000, ge=10, description="Events a live-stream client may fall behind before it is told (`overflow`) "
        "and disconnected; it reconnects with Last-Event-ID where it stopped.")

    uvloop: bool = Field(
        False, description="Run the worker on uvloop (libuv) rather than asyncio's own event loop. For planner, "
        "refiner and learner workers: about 5-10% less CPU per event and a shorter learner hop; not for scorers, "
        "whose loaded hop it made 3-4x longer in `make bench`.",
    )
    shutdown_timeout_s: float = Field(
        30.0, gt=0,
        description="How long a worker may take to stop after SIGTERM/SIGINT; then it exits anyway "
        "(in-flight events are redelivered: handlers are idempotent).",
    )

    log_level: str = Field("INFO", description="Log level of workers and CLI.")
    log_format: Literal["json", "console"] = Field("console", description="`json` for log shippers.")

    @field_validator("api_cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def group_instance_id(self, stage: str) -> str | None:
        """The stage's static group membership id (``TOWER_WORKER_ID``), ``None`` for dynamic."""
        return f"{self.app_id(stage)}.{self.worker_id}" if self.worker_id else None

    def app_id(self, stage: str) -> str:
        return f"{self.group_prefix}-{stage}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def mask_password(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
