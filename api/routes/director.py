"""The seed's four endpoints (``/api/director/scene/plan``, ``prompt/enhance``, ``feedback/submit``,
``workflow/integrate``) and batches: planning and prompt writing answer at once (dry runs, no
events); the others produce events and answer 202."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Body, Depends, Path, Request, Response
from pydantic import ValidationError

from api.backends import Backends
from api.models import (
    BatchRequest,
    BatchResponse,
    EnhanceRequest,
    EnhanceResponse,
    FeedbackRequest,
    FeedbackResponse,
    FeedbackShot,
    IntegrateRequest,
    IntegrateResponse,
    Links,
    PlanRequest,
    PlanResponse,
    ReassembleResponse,
    RegenerateRequest,
    RegenerateResponse,
    SceneEta,
    scene_request,
)
from api.problems import Problem
from api.security import require_read, require_write
from director.eta import estimate
from director.learning import evidence_of
from director.modifiers import MODIFIERS
from director.planner import ScenePlan, plan_scene
from eventlog.follow import scene_envelope
from events.envelope import Envelope, derive_event_id, new_event_id
from events.models import MAX_SHOTS, Direction, FeedbackSubmitted, ReassemblyRequested, SceneRequested, ShotPlanned
from events.topics import FEEDBACK_SUBMITTED, SCENE_REASSEMBLE
from foundation.settings import Settings
from render.backends import workflow_name
from store.eta import scene_timings
from store.projections import open_batch
from store.queries import (
    accepted_shots,
    attempt_pattern,
    judged_scene,
    scene_assembly,
    scene_exists,
)
from store.refining import refine_planned
from store.regenerating import RegenerationRefused, mark_published, plan_regeneration

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
    settings = settings_of(request)
    plan = plan_for(body, settings)
    eta, note = await _eta(request, workflow_name(settings, body.render_preset),
                           sum(shot.frame_count for shot in plan.shots))
    return PlanResponse(session_id=body.session_id, shot_list=list(plan.shots), overall_mood=plan.overall_mood,
                        lighting_suggestions=plan.lighting_suggestions, genre=plan.genre, notes=list(plan.notes),
                        detected_characters=list(plan.detected_characters), eta=eta, eta_note=note)


async def _eta(request: Request, workflow: str, frames: int) -> tuple[SceneEta | None, str | None]:
    """The plan's ETA; a plan is a dry run, so a database that does not answer costs the ETA only."""
    try:
        history = await backends_of(request).query(lambda pool: scene_timings(pool, workflow))
    except asyncpg.UndefinedTableError:
        return None, "no ETA yet: no scene has finished on this database"
    except (Problem, asyncpg.PostgresError) as exc:
        return None, f"no ETA: the history is not readable ({exc})"
    found = estimate(history, frames)
    if found is None:
        return None, f"no ETA yet: no scene rendered with {workflow} has finished"
    return SceneEta(seconds=round(found.seconds, 1), from_scenes=found.scenes, workflow=workflow,
                    method=found.method), None


ENHANCE_EXAMPLES = {
    "seed": {
        "summary": "The seed's client: the text to enhance as `prompt`",
        "description": "The text is planned as a scene; the answer is the prompt of its first shot.",
        "value": {"session_id": "test", "prompt": "Kai fights the dragon"},
    },
    "shot": {
        "summary": "A planned shot of a scene, with overrides",
        "value": {"session_id": "test", "scene_description": "Create a scene where Kai fights the dragon",
                  "characters": ["Kai", "Dragon"], "shot_number": 2, "mood": "tense"},
    },
}


@router.post("/prompt/enhance", response_model=EnhanceResponse, dependencies=[Depends(require_read)],
             summary="The refined prompt for one planned shot, from the current pattern table (no events)")
async def prompt_enhance(
    body: Annotated[EnhanceRequest, Body(openapi_examples=ENHANCE_EXAMPLES)], request: Request
) -> EnhanceResponse:
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
    refined = await backends_of(request).query(lambda pool: refine_planned(
        pool, planned, settings, workflow=workflow_name(settings), now=datetime.now(UTC)))
    return EnhanceResponse(session_id=body.session_id, shot=shot, prompt=refined.prompt)


def _links(request: Request, scene_id: str, session_id: str) -> Links:
    base = "/api/director"
    return Links(scene=f"{base}/scenes/{scene_id}", events=f"{base}/scenes/{scene_id}/events",
                 session=f"{base}/sessions/{session_id}")


@router.post("/scenes/{scene_id}/shots/{shot_number}/regenerate", status_code=202, response_model=RegenerateResponse,
             dependencies=[Depends(require_write)],
             responses={200: {"description": "The same request was made before: its attempt, nothing started again",
                              "model": RegenerateResponse},
                        404: {"description": "No such scene or shot"}},
             summary="Regenerate one shot on a person's direction (a new attempt of that shot only)")
async def regenerate(scene_id: Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^\x00]+$")],
                     shot_number: Annotated[int, Path(ge=1, le=MAX_SHOTS)], request: Request, response: Response,
                     body: RegenerateRequest | None = None) -> RegenerateResponse:
    backends = backends_of(request)
    direction = Direction(**(body or RegenerateRequest()).model_dump())
    if direction.modifier is not None and direction.modifier not in MODIFIERS:
        raise Problem(422, f"no modifier {direction.modifier!r}; modifiers: {', '.join(MODIFIERS)}",
                      title="Invalid request")
    try:
        planned = await backends.query(lambda pool: plan_regeneration(pool, scene_id, shot_number, direction,
                                                                       source=SOURCE))
    except RegenerationRefused as exc:
        raise Problem(404, str(exc)) from exc
    if not planned.published:
        await backends.publish([planned.envelope])
        await backends.query(lambda pool: mark_published(pool, planned.envelope.id))
    if not planned.new:
        response.status_code = 200
    value = planned.envelope.value
    return RegenerateResponse(status="accepted" if planned.new else "already_requested", scene_id=scene_id,
                              shot_number=shot_number, attempt=value.attempt, event_id=planned.envelope.id,
                              links=_links(request, scene_id, value.session_id))


@router.post("/scenes/{scene_id}/reassemble", status_code=202, response_model=ReassembleResponse,
             dependencies=[Depends(require_write)],
             responses={404: {"description": "No such scene"}, 409: {"description": "Not assembled yet"}},
             summary="Write a scene's video, storyboard and timeline again (lost files): same inputs, same bytes")
async def reassemble(scene_id: Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^\x00]+$")],
                     request: Request) -> ReassembleResponse:
    backends = backends_of(request)
    assembly = await backends.query(lambda pool: scene_assembly(pool, scene_id))
    if assembly is None:
        if not await backends.query(lambda pool: scene_exists(pool, scene_id)):
            raise Problem(404, f"no scene {scene_id!r}")
        raise Problem(409, f"scene {scene_id!r} has not been assembled yet: the editor cuts it once every shot is final")
    value = ReassemblyRequested(scene_id=scene_id, session_id=assembly["session_id"], reason="requested through the API")
    envelope = Envelope(id=new_event_id(), source=SOURCE, type=SCENE_REASSEMBLE.event_type, scene_id=scene_id,
                        session_id=value.session_id, value=value)
    await backends.publish([envelope])
    return ReassembleResponse(scene_id=scene_id, event_id=envelope.id,
                              links=_links(request, scene_id, value.session_id))


@router.post("/workflow/integrate", status_code=202, response_model=IntegrateResponse,
             dependencies=[Depends(require_write)],
             summary="Start the whole pipeline for a scene (produces scene.requested)")
async def workflow_integrate(body: IntegrateRequest, request: Request, response: Response) -> IntegrateResponse:
    backends = backends_of(request)
    if body.scene_id and await backends.query(lambda pool: scene_exists(pool, body.scene_id)):
        raise Problem(409, f"scene {body.scene_id} exists; scene ids must be unique (leave scene_id out for a new one)")
    scene = scene_request(body)
    envelope = scene_envelope(scene, source=SOURCE)
    await backends.publish([envelope])
    links = _links(request, scene.scene_id, scene.session_id)
    response.headers["Location"] = links.scene
    return IntegrateResponse(session_id=scene.session_id, scene_id=scene.scene_id, event_id=envelope.id, links=links)


# The bodies the seed's client sends, and the fuller ones: shown in /docs and the OpenAPI document.
FEEDBACK_EXAMPLES = {
    "seed": {
        "summary": "The seed's client: scores for its session's latest scene",
        "description": "Applies to the scene's accepted shots (each shot whose best attempt passed), which share "
                       "the feedback's weight: one judgement of the scene.",
        "value": {"session_id": "test", "quality_scores": {"ssim": 0.85, "consistency": 0.90}},
    },
    "scene": {
        "summary": "A rating of a named scene as a whole",
        "value": {"session_id": "test", "scene_id": "scene-3f2a9c1e7b4d", "rating": 4, "comment": "good pacing"},
    },
    "shot": {
        "summary": "A rating of one shot (its best scored attempt unless `attempt` says which)",
        "value": {"scene_id": "scene-3f2a9c1e7b4d", "shot_number": 1, "rating": 2,
                  "comment": "the dragon is off-model"},
    },
}


@router.post("/feedback/submit", status_code=202, response_model=FeedbackResponse,
             dependencies=[Depends(require_write)],
             summary="Scores or a human rating of an attempt or a whole scene, for the learner "
                     "(produces feedback.submitted)",
             responses={404: {"description": "No such scene, session, shot or attempt"},
                        409: {"description": "The attempt has no refined prompt yet, or the scene no accepted shot"}})
async def feedback_submit(
    body: Annotated[FeedbackRequest, Body(openapi_examples=FEEDBACK_EXAMPLES)], request: Request
) -> FeedbackResponse:
    backends = backends_of(request)
    if body.scope == "scene":
        return await _scene_feedback(body, backends)
    return await _shot_feedback(body, body.shot_number, backends)


async def _shot_feedback(body: FeedbackRequest, shot_number: int, backends: Backends) -> FeedbackResponse:
    """Feedback on one attempt: the shot's best scored one unless ``attempt`` names it."""

    async def find(pool) -> tuple[Any, Any]:  # noqa: ANN001 - asyncpg.Pool
        scene = await judged_scene(pool, scene_id=body.scene_id, session_id=body.session_id)
        return scene, (await attempt_pattern(pool, scene["scene_id"], shot_number, body.attempt) if scene else None)

    scene, row = await backends.query(find)
    if scene is None:
        raise Problem(404, _no_scene(body))
    if row is None:
        which = f"attempt {body.attempt} of " if body.attempt else ""
        session = f" in session {body.session_id}" if body.session_id else ""
        raise Problem(404, f"no {which}shot {shot_number} in scene {scene['scene_id']}{session}")
    if row["context"] is None or row["modifier"] is None:
        raise Problem(409, f"attempt {row['attempt']} of shot {shot_number} has no refined prompt yet; "
                           "send the feedback once it has been refined")
    scene_id = scene["scene_id"]
    feedback_id = body.feedback_id or _content_id(
        [scene_id, shot_number, row["attempt"], body.rating, body.comment, _scores(body)])
    values = _feedback_values(body, scene, feedback_id, row, scene_shots=None)
    envelopes = _envelopes(values, key=f"feedback/{scene_id}/{feedback_id}")
    await backends.publish(envelopes)
    return FeedbackResponse(scope="shot", feedback_id=feedback_id, scene_id=scene_id, session_id=scene["session_id"],
                            shot_number=shot_number, attempt=row["attempt"], context=row["context"],
                            modifier=row["modifier"], shots=[_applied(row, values)], events=_event_list(envelopes))


async def _scene_feedback(body: FeedbackRequest, backends: Backends) -> FeedbackResponse:
    """Feedback on a whole scene: one event per accepted shot and source, each carrying the number
    of shots (``scene_shots``), so the learner gives each 1/n of the source's weight and the
    scene counts once, however many shots it has."""

    async def find(pool) -> tuple[Any, list]:  # noqa: ANN001 - asyncpg.Pool
        scene = await judged_scene(pool, scene_id=body.scene_id, session_id=body.session_id)
        return scene, (await accepted_shots(pool, scene["scene_id"]) if scene else [])

    scene, shots = await backends.query(find)
    if scene is None:
        raise Problem(404, _no_scene(body))
    scene_id = scene["scene_id"]
    if not shots:
        raise Problem(409, f"scene {scene_id} has no accepted shot yet (none whose best attempt passed its threshold): "
                           "send the feedback once one has, or name a shot_number to judge that shot's attempt")
    # The accepted attempts are part of the default id: the same request about the same shots counts once.
    feedback_id = body.feedback_id or _content_id(
        ["scene", scene_id, [[s["shot_number"], s["attempt"]] for s in shots], body.rating, body.comment, _scores(body)])
    applied, envelopes = [], []
    for shot in shots:
        values = _feedback_values(body, scene, feedback_id, shot, scene_shots=len(shots))
        applied.append(_applied(shot, values))
        envelopes += _envelopes(values, key=f"feedback/{scene_id}/{feedback_id}/shot-{shot['shot_number']}")
    await backends.publish(envelopes)
    return FeedbackResponse(scope="scene", feedback_id=feedback_id, scene_id=scene_id, session_id=scene["session_id"],
                            shots=applied, events=_event_list(envelopes))


def _no_scene(body: FeedbackRequest) -> str:
    if body.scene_id is None:
        return (f"session {body.session_id} has no scene; start one with workflow/integrate, "
                "or name the scene_id the feedback is about")
    session = f" in session {body.session_id}" if body.session_id else ""
    return f"no scene {body.scene_id}{session}"


def _scores(body: FeedbackRequest) -> dict[str, float]:
    return body.quality_scores.present() if body.quality_scores else {}


def _content_id(content: list[Any]) -> str:
    """A feedback id derived from what the request says, so a resent request counts once."""
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:32]


def _feedback_values(body: FeedbackRequest, scene: Mapping[str, Any], feedback_id: str, attempt: Mapping[str, Any], *,
                     scene_shots: int | None) -> list[FeedbackSubmitted]:
    """The events of one judged attempt of ``scene``: one per source the request carries (a
    rating: human; quality_scores: external)."""
    common = dict(scene_id=scene["scene_id"], session_id=scene["session_id"], feedback_id=feedback_id,
                  shot_number=attempt["shot_number"], attempt=attempt["attempt"], context=attempt["context"],
                  modifier=attempt["modifier"], scene_shots=scene_shots)
    values = []
    if body.rating is not None:
        values.append(FeedbackSubmitted(**common, source="human", rating=body.rating, comment=body.comment))
    if _scores(body):
        values.append(FeedbackSubmitted(**common, source="external", scores=body.quality_scores,
                                        comment=None if body.rating is not None else body.comment))
    return values


def _envelopes(values: list[FeedbackSubmitted], *, key: str) -> list[Envelope]:
    """The events as envelopes, their ids derived from ``key`` and the source: a resent request
    produces the same ids, which the learner applies once."""
    now = datetime.now(UTC)
    return [
        Envelope(id=derive_event_id(key, FEEDBACK_SUBMITTED.event_type, 0 if value.source == "human" else 1),
                 source=SOURCE, type=FEEDBACK_SUBMITTED.event_type, scene_id=value.scene_id,
                 session_id=value.session_id, value=value, time=now)
        for value in values
    ]


def _applied(attempt: Mapping[str, Any], values: list[FeedbackSubmitted]) -> FeedbackShot:
    """A judged attempt as the response reports it, with the weight the learner gives each event."""
    weights = {}
    for value in values:
        evidence = evidence_of(value)
        assert evidence is not None  # feedback always carries evidence
        weights[value.source] = evidence.weight
    return FeedbackShot(shot_number=attempt["shot_number"], attempt=attempt["attempt"], context=attempt["context"],
                        modifier=attempt["modifier"], weights=weights)


def _event_list(envelopes: list[Envelope]) -> list[dict[str, str]]:
    return [{"id": e.id, "source": e.value.source} for e in envelopes]


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
    scenes = [scene_request(b, batch_id=batch_id, batch_size=len(bodies)) for b in bodies]

    taken = await backends.query(lambda pool: open_batch(pool, batch_id, [s.scene_id for s in scenes], datetime.now(UTC)))
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
