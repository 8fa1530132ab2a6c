"""The seed's four endpoints (``/api/director/scene/plan``, ``prompt/enhance``, ``feedback/submit``,
``workflow/integrate``) and batches: planning and prompt writing answer at once (dry runs, no
events); the others produce events and answer 202."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError

from api.backends import Backends
from api.models import (
    BatchRequest,
    BatchResponse,
    EnhanceRequest,
    EnhanceResponse,
    FeedbackRequest,
    FeedbackResponse,
    IntegrateRequest,
    IntegrateResponse,
    Links,
    PlanRequest,
    PlanResponse,
)
from api.problems import Problem
from api.security import require_read, require_write
from director.learning import learning_parameters
from director.modifiers import MODIFIERS
from director.planner import ScenePlan, plan_scene
from director.refiner import pattern_context, refine
from eventlog.follow import new_scene_id, scene_envelope
from events.envelope import Envelope, derive_event_id
from events.models import FeedbackSubmitted, SceneRequested, ShotPlanned
from events.topics import FEEDBACK_SUBMITTED
from foundation.settings import Settings
from render.backends import workflow_name
from store.projections import record_batch
from store.queries import attempt_pattern, character_sheets_for, decision_posteriors, scene_exists

router = APIRouter(prefix="/api/director", tags=["director"])
SOURCE = "tower/api"
JSONL_TYPES = {"application/x-ndjson", "application/jsonl", "application/x-jsonlines"}


def backends_of(request: Request) -> Backends:
    return request.app.state.backends


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


@lru_cache(maxsize=4096)
def _plan(description: str, characters: tuple[str, ...], style: str, fps: int, target: float | None) -> ScenePlan:
    """The planner is deterministic, so a plan asked for twice is computed once."""
    request = SceneRequested(scene_id="plan-preview", session_id="preview", description=description,
                             characters=list(characters), style=style, target_duration_s=target)
    return plan_scene(request, fps=fps)


def plan_for(body: PlanRequest | EnhanceRequest, settings: Settings) -> ScenePlan:
    try:
        return _plan(body.scene_description, tuple(body.characters), body.style, settings.render_fps,
                     getattr(body, "target_duration_s", None))
    except ValueError as exc:
        raise Problem(422, f"the scene cannot be planned: {exc}", title="Invalid request") from exc


@router.post("/scene/plan", response_model=PlanResponse, dependencies=[Depends(require_read)], summary="Plan a scene into shots (dry run, no events)")
async def scene_plan(body: PlanRequest, request: Request) -> PlanResponse:
    plan = plan_for(body, settings_of(request))
    return PlanResponse(session_id=body.session_id, shot_list=list(plan.shots), overall_mood=plan.overall_mood,
                        lighting_suggestions=plan.lighting_suggestions, genre=plan.genre, notes=list(plan.notes),
                        detected_characters=list(plan.detected_characters))


@router.post("/prompt/enhance", response_model=EnhanceResponse, dependencies=[Depends(require_read)],
             summary="The refined prompt for one planned shot, from the current pattern table (no events)")
async def prompt_enhance(body: EnhanceRequest, request: Request) -> EnhanceResponse:
    settings = settings_of(request)
    plan = plan_for(body, settings)
    if body.shot_number > len(plan.shots):
        raise Problem(422, f"the scene plans {len(plan.shots)} shot(s); shot_number {body.shot_number} is not one of them")
    overrides = {name: getattr(body, name) for name in ("camera_angle", "mood", "lighting") if getattr(body, name)}
    if body.characters:
        overrides["characters"] = list(body.characters)
    shot = plan.shots[body.shot_number - 1].model_copy(update=overrides)
    digest = hashlib.sha256(f"{body.session_id}\n{body.scene_description}".encode()).hexdigest()[:16]
    planned = ShotPlanned(
        scene_id=f"enhance-{digest}", session_id=body.session_id, attempt=body.attempt,
        max_attempts=max(body.attempt, settings.max_attempts), quality_threshold=settings.quality_threshold,
        shot=shot, style=body.style, overall_mood=plan.overall_mood, lighting_suggestions=plan.lighting_suggestions,
        character_sheets=body.character_sheets,
    )
    workflow = workflow_name(settings)

    async def decide(pool) -> tuple[dict, dict]:  # noqa: ANN001 - asyncpg.Pool
        posteriors = await decision_posteriors(
            pool, pattern_context(shot, workflow), list(MODIFIERS), now=datetime.now(UTC), learning=learning_parameters(settings))
        missing = [name for name in shot.characters if name not in body.character_sheets]
        return posteriors, await character_sheets_for(pool, missing)

    posteriors, sheets = await backends_of(request).query(decide)
    refined = refine(planned, posteriors, sheets, width=settings.render_width, height=settings.render_height,
                     workflow=workflow, learner_version=settings.learner_version)
    return EnhanceResponse(session_id=body.session_id, shot=shot, prompt=refined.prompt)


def _links(request: Request, scene_id: str, session_id: str) -> Links:
    base = "/api/director"
    return Links(scene=f"{base}/scenes/{scene_id}", events=f"{base}/scenes/{scene_id}/events",
                 session=f"{base}/sessions/{session_id}")


def _scene_request(body: IntegrateRequest, **extra: Any) -> SceneRequested:
    return SceneRequested(
        scene_id=body.scene_id or new_scene_id(), session_id=body.session_id, description=body.scene_description,
        characters=list(body.characters), style=body.style, max_attempts=body.max_attempts,
        quality_threshold=body.quality_threshold, target_duration_s=body.target_duration_s,
        character_sheets=body.character_sheets, **extra,
    )


@router.post("/workflow/integrate", status_code=202, response_model=IntegrateResponse,
             dependencies=[Depends(require_write)],
             summary="Start the whole pipeline for a scene (produces scene.requested)")
async def workflow_integrate(body: IntegrateRequest, request: Request, response: Response) -> IntegrateResponse:
    backends = backends_of(request)
    if body.scene_id and await backends.query(lambda pool: scene_exists(pool, body.scene_id)):
        raise Problem(409, f"scene {body.scene_id} exists; scene ids must be unique (leave scene_id out for a new one)")
    scene = _scene_request(body)
    envelope = scene_envelope(scene, source=SOURCE)
    await backends.publish([envelope])
    links = _links(request, scene.scene_id, scene.session_id)
    response.headers["Location"] = links.scene
    return IntegrateResponse(session_id=scene.session_id, scene_id=scene.scene_id, event_id=envelope.id, links=links)


@router.post("/feedback/submit", status_code=202, response_model=FeedbackResponse,
             dependencies=[Depends(require_write)],
             summary="Scores or a human rating of an attempt, for the learner (produces feedback.submitted)",
             responses={404: {"description": "No such scene, shot or attempt"},
                        409: {"description": "The attempt has no refined prompt yet"}})
async def feedback_submit(body: FeedbackRequest, request: Request) -> FeedbackResponse:
    backends = backends_of(request)
    row = await backends.query(lambda pool: attempt_pattern(pool, body.scene_id, body.shot_number, body.attempt))
    if row is None or (body.session_id is not None and row["session_id"] != body.session_id):
        which = f"attempt {body.attempt} of " if body.attempt else ""
        session = f" in session {body.session_id}" if body.session_id else ""
        raise Problem(404, f"no {which}shot {body.shot_number} in scene {body.scene_id}{session}")
    if row["context"] is None or row["modifier"] is None:
        raise Problem(409, f"attempt {row['attempt']} of shot {body.shot_number} has no refined prompt yet; "
                           "send the feedback once it has been refined")
    scores = body.quality_scores.present() if body.quality_scores else {}
    feedback_id = body.feedback_id or hashlib.sha256(json.dumps(
        [body.scene_id, body.shot_number, row["attempt"], body.rating, body.comment, scores], sort_keys=True
    ).encode()).hexdigest()[:32]
    common = dict(scene_id=body.scene_id, session_id=row["session_id"], feedback_id=feedback_id,
                  shot_number=body.shot_number, attempt=row["attempt"], context=row["context"],
                  modifier=row["modifier"])
    values = []
    if body.rating is not None:
        values.append(FeedbackSubmitted(**common, source="human", rating=body.rating, comment=body.comment))
    if scores:
        values.append(FeedbackSubmitted(**common, source="external", scores=body.quality_scores,
                                        comment=None if body.rating is not None else body.comment))
    now = datetime.now(UTC)
    envelopes = [
        Envelope(id=derive_event_id(f"feedback/{body.scene_id}/{feedback_id}", FEEDBACK_SUBMITTED.event_type, index),
                 source=SOURCE, type=FEEDBACK_SUBMITTED.event_type, scene_id=body.scene_id,
                 session_id=row["session_id"], value=value, time=now)
        for index, value in ((0 if v.source == "human" else 1, v) for v in values)
    ]
    await backends.publish(envelopes)
    return FeedbackResponse(feedback_id=feedback_id, scene_id=body.scene_id, shot_number=body.shot_number,
                            attempt=row["attempt"], context=row["context"], modifier=row["modifier"],
                            events=[{"id": e.id, "source": e.value.source} for e in envelopes])


_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": BatchRequest.model_json_schema()},
            "application/x-ndjson": {"schema": {"type": "string", "description": "One workflow/integrate body per line."}},
        },
    }
}


@router.post("/batches", status_code=202, response_model=BatchResponse, dependencies=[Depends(require_write)],
             openapi_extra=_BATCH_BODY,
             summary="Submit many scenes at once: a JSON list, or a JSONL upload (one scene per line)")
async def submit_batch(request: Request, response: Response) -> BatchResponse:
    settings, backends = settings_of(request), backends_of(request)
    batch_id = f"batch-{uuid.uuid4().hex[:12]}"
    batch = await _read_batch(request)
    session_id = batch.session_id or f"session-{batch_id.removeprefix('batch-')}"
    if len(batch.scenes) > settings.api_max_batch_scenes:
        raise Problem(422, f"the batch has {len(batch.scenes)} scenes; at most {settings.api_max_batch_scenes} "
                           "(TOWER_API_MAX_BATCH_SCENES)")
    bodies, errors = [], []
    for number, scene in enumerate(batch.scenes, start=1):
        try:
            bodies.append(IntegrateRequest.model_validate({"session_id": session_id, **scene}))
        except ValidationError as exc:
            errors.append({"scene": number, "message": "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)[:3])})
    if errors:
        raise Problem(422, f"{len(errors)} scene(s) of the batch are not valid; the first: scene "
                           f"{errors[0]['scene']}: {errors[0]['message']}", title="Invalid request", errors=errors[:50])
    given = [b.scene_id for b in bodies if b.scene_id]
    if len(set(given)) < len(given):
        raise Problem(422, "scene ids in a batch must be distinct")
    scenes = [_scene_request(b, batch_id=batch_id, batch_size=len(bodies)) for b in bodies]

    async def prepare(pool) -> list[str]:  # noqa: ANN001 - asyncpg.Pool
        taken = [sid for sid in given if await scene_exists(pool, sid)]
        if not taken:
            await record_batch(pool, batch_id, len(scenes), datetime.now(UTC))
        return taken

    taken = await backends.query(prepare)
    if taken:
        raise Problem(409, f"scene id(s) exist already: {', '.join(taken[:10])}; scene ids must be unique")
    await backends.publish([scene_envelope(s, source=SOURCE) for s in scenes])
    link = f"/api/director/batches/{batch_id}"
    response.headers["Location"] = link
    return BatchResponse(batch_id=batch_id, session_id=session_id, scene_ids=[s.scene_id for s in scenes],
                         links={"batch": link, "session": f"/api/director/sessions/{session_id}"})


async def _read_batch(request: Request) -> BatchRequest:
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    raw = await request.body()
    try:
        if content_type in JSONL_TYPES:
            scenes = []
            for number, line in enumerate(raw.decode().splitlines(), start=1):
                if line.strip():
                    scene = json.loads(line)
                    if not isinstance(scene, dict):
                        raise Problem(422, f"line {number} of the JSONL upload is not a JSON object")
                    scenes.append(scene)
            return BatchRequest(scenes=scenes)
        if content_type == "application/json":
            return BatchRequest.model_validate_json(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise Problem(422, f"the batch is not valid {content_type}: {exc}", title="Invalid request") from exc
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise Problem(422, f"the batch is not valid: {'.'.join(map(str, first['loc'])) or 'body'}: {first['msg']}",
                      title="Invalid request") from exc
    raise Problem(415, f"send the batch as application/json or application/x-ndjson, not {content_type}")
