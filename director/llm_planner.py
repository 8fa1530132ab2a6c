"""An optional planner backend: an OpenAI-compatible chat endpoint (Ollama, llama.cpp server,
vLLM) writes the shot list, constrained to a JSON Schema.

The request asks for ``response_format: {"type": "json_schema", ...}`` with :data:`PLAN_SCHEMA`,
so a server with constrained decoding can only answer schema-valid JSON; a server that refuses
that form (llama-cpp-python's, which takes ``{"type": "json_object", "schema": ...}``) is asked
once more in its own form, which is then remembered for its URL. The answer is validated again
here against the same model. Anything else (a timeout, an HTTP error, malformed JSON, a
schema violation, a refusal, a plan that names no shot) falls back to the built-in planner, and
the plan says so: :attr:`LlmOutcome.fallback_reason`, recorded in every ``shot.planned``. What
the built-in planner knows and a model may not (the render grid's durations, the setting, time
of day and palette, continuity) is applied to the model's shots too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Annotated, Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from director.planner import ScenePlan, plan_scene, snap_duration
from events.models import SceneRequested, ShotSpec

MAX_LLM_SHOTS = 24


class LlmShot(BaseModel):
    model_config = ConfigDict(extra="forbid")

    camera_angle: Annotated[str, Field(min_length=1, max_length=40)]
    camera_movement: Annotated[str, Field(min_length=1, max_length=40)]
    duration: Annotated[float, Field(ge=0.5, le=60)]
    characters: Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=8)]
    mood: Annotated[str, Field(min_length=1, max_length=40)]
    lighting: Annotated[str, Field(min_length=1, max_length=80)]
    action: Annotated[str, Field(min_length=1, max_length=300)]
    expected_motion: Annotated[float, Field(ge=0, le=1)]


class LlmPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shots: Annotated[list[LlmShot], Field(min_length=1, max_length=MAX_LLM_SHOTS)]


PLAN_SCHEMA: dict[str, Any] = LlmPlan.model_json_schema()

SYSTEM_PROMPT = (
    "You are the director of an anime production. Split the scene into shots as a storyboard artist "
    "would: an establishing shot first; dialogue as a two-shot, then shot / reverse shot and reactions; "
    "action from wide to medium to close with an impact and a reaction; a reveal as a slow push-in; a "
    "chase with tracking and point-of-view shots. Every named character appears in at least one shot. "
    "camera_angle is one of wide, medium, close-up, extreme close-up, low-angle, high-angle, "
    "over-the-shoulder, two-shot, pov; camera_movement one of static, slow pan, tracking, slow push-in, "
    "handheld; expected_motion is 0 for a still shot and 1 for fast action. Answer with JSON only."
)


@dataclass(frozen=True)
class LlmOutcome:
    plan: ScenePlan
    planner: str  # "llm", or "builtin" when it fell back
    fallback_reason: str | None = None


@dataclass(frozen=True)
class LlmEndpoint:
    url: str  # the API base, e.g. http://127.0.0.1:8080/v1
    model: str
    timeout_s: float = 20.0
    api_key: str | None = None


# How a request asks for schema-constrained output, in the order tried: OpenAI's form (the
# llama.cpp server, Ollama, vLLM), then the schema inside a json_object (llama-cpp-python's
# server, which refuses json_schema).
RESPONSE_FORMATS: dict[str, dict[str, Any]] = {
    "json_schema": {"type": "json_schema", "json_schema": {"name": "shot_plan", "strict": True, "schema": PLAN_SCHEMA}},
    "json_object": {"type": "json_object", "schema": PLAN_SCHEMA},
}
# The form each endpoint URL accepted, so a server is asked in its own form from then on.
_accepted_format: dict[str, str] = {}


def request_body(request: SceneRequested, endpoint: LlmEndpoint, response_format: str = "json_schema") -> dict[str, Any]:
    scene = {"description": request.description, "characters": request.characters, "style": request.style}
    if request.target_duration_s:
        scene["target_duration_s"] = request.target_duration_s
    return {
        "model": endpoint.model,
        "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                     {"role": "user", "content": json.dumps(scene, ensure_ascii=False)}],
        "response_format": RESPONSE_FORMATS[response_format],
        "temperature": 0,
        "seed": 0,
    }


def _refuses_format(response: httpx.Response) -> bool:
    """An error that is about the response_format field (a server that does not know the form)."""
    return response.is_error and b"response_format" in response.content


async def llm_plan(request: SceneRequested, *, fps: int, endpoint: LlmEndpoint,
                   client: httpx.AsyncClient | None = None) -> LlmOutcome:
    """The model's plan, or the built-in one with the reason it had to be used."""
    builtin = plan_scene(request, fps=fps)  # raises for a blank description, like the built-in planner
    try:
        answer = await _ask(request, endpoint, client)
    except httpx.TimeoutException:
        return LlmOutcome(builtin, "builtin", f"the model at {endpoint.url} did not answer within {endpoint.timeout_s:g} s")
    except httpx.HTTPError as exc:
        return LlmOutcome(builtin, "builtin", f"the model at {endpoint.url} failed: {type(exc).__name__}: {exc}"[:500])
    except _Unusable as exc:
        return LlmOutcome(builtin, "builtin", str(exc)[:500])
    return LlmOutcome(merge(answer, builtin, fps), "llm")


class _Unusable(Exception):
    """An answer that is not a plan (a refusal, malformed JSON, a schema violation)."""


async def _ask(request: SceneRequested, endpoint: LlmEndpoint, client: httpx.AsyncClient | None) -> LlmPlan:
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    own = client is None
    client = client or httpx.AsyncClient(timeout=endpoint.timeout_s)
    url = f"{endpoint.url.rstrip('/')}/chat/completions"
    forms = [_accepted_format[url]] if url in _accepted_format else list(RESPONSE_FORMATS)
    try:
        for form in forms:
            response = await client.post(url, json=request_body(request, endpoint, form), headers=headers,
                                         timeout=endpoint.timeout_s)
            if form != forms[-1] and _refuses_format(response):
                continue
            response.raise_for_status()
            _accepted_format[url] = form
            break
    finally:
        if own:
            await client.aclose()
    try:
        choice = response.json()["choices"][0]
        message = choice["message"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise _Unusable(f"the model's response is not a chat completion: {exc!r}") from None
    if message.get("refusal") or choice.get("finish_reason") == "content_filter":
        raise _Unusable(f"the model refused: {message.get('refusal') or 'content filter'}")
    content = message.get("content") or ""
    try:
        return LlmPlan.model_validate_json(content)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(map(str, first["loc"])) or "the answer"
        kind = "malformed JSON" if first["type"] == "json_invalid" else "a plan that violates the schema"
        raise _Unusable(f"the model answered {kind} ({where}: {first['msg']})") from None


def merge(answer: LlmPlan, builtin: ScenePlan, fps: int) -> ScenePlan:
    """The model's shots on the render grid, with the built-in plan's setting, time, palette,
    mood and lighting suggestions, and continuity; a target length is met by scaling."""
    reference = builtin.shots[0]
    notes = [*builtin.notes, "planned by the LLM backend"]
    named = [*builtin.characters] or [c for shot in builtin.shots for c in shot.characters]
    missing = [c for c in dict.fromkeys(named) if all(c not in shot.characters for shot in answer.shots)]
    if missing:  # every named character appears at least once: in the establishing shot
        first = answer.shots[0].model_copy(update={"characters": [*answer.shots[0].characters, *missing][:8]})
        answer = answer.model_copy(update={"shots": [first, *answer.shots[1:]]})
        notes.append(f"the model left out {', '.join(missing)}: added to shot 1")
    durations = [shot.duration for shot in answer.shots]
    if builtin.target_duration_s:
        scale = builtin.target_duration_s / sum(durations)
        durations = [d * scale for d in durations]
    shots = []
    for number, (shot, seconds) in enumerate(zip(answer.shots, durations, strict=True), start=1):
        duration, frames = snap_duration(seconds, fps)
        shots.append(ShotSpec(
            shot_number=number, shot_count=len(answer.shots), camera_angle=shot.camera_angle,
            camera_movement=shot.camera_movement, duration=duration, fps=fps, frame_count=frames,
            characters=shot.characters, mood=shot.mood, lighting=shot.lighting, action=shot.action,
            description=f"shot {number}/{len(answer.shots)} by the model: {shot.action}",
            continuity_notes=reference.continuity_notes if number == 1 else
            f"time: {reference.time_of_day}; place: {reference.setting}; match designs and palette of shot 1",
            setting=reference.setting, time_of_day=reference.time_of_day, palette=reference.palette,
            expected_motion=shot.expected_motion,
        ))
    return replace(builtin, shots=tuple(shots), notes=tuple(notes))
