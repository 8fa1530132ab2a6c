"""The LLM planner backend against a local fake OpenAI-compatible server (named as such: no model
runs here), for the answers a real one can give: a plan, a timeout, malformed JSON, a schema
violation, a refusal, an HTTP error. Every failure falls back to the built-in plan, saying why."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from director.llm_planner import PLAN_SCHEMA, LlmEndpoint, llm_plan
from director.planner import plan_scene
from events.models import SceneRequested

REQUEST = SceneRequested(scene_id="s", session_id="s", description="Kai fights the dragon on the bridge at night",
                         characters=["Kai", "Dragon"])
GOOD = {"shots": [
    {"camera_angle": "wide", "camera_movement": "slow pan", "duration": 3.1, "characters": ["Kai"], "mood": "tense",
     "lighting": "low-key moonlight", "action": "Kai on the bridge", "expected_motion": 0.2},
    {"camera_angle": "low-angle", "camera_movement": "handheld", "duration": 2.0, "characters": ["Kai"],
     "mood": "intense", "lighting": "dramatic shadows", "action": "Kai swings", "expected_motion": 0.9},
]}


def completion(content: str | None, **message) -> dict:
    return {"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content, **message}}]}


class FakeLLM:
    """A fake OpenAI-compatible chat endpoint: answers what the test tells it to, records requests."""

    def __init__(self) -> None:
        self.answer: web.Response | None = None
        self.delay_s = 0.0
        self.requests: list[dict] = []
        self.refuse_json_schema = False  # answer as llama-cpp-python's server does

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        await asyncio.sleep(self.delay_s)
        if self.refuse_json_schema and body["response_format"]["type"] == "json_schema":
            return web.json_response({"error": {"message": "1 validation error: ('body', 'response_format', 'type') "
                                                           "Input should be 'text' or 'json_object'"}}, status=500)
        return self.answer


@pytest.fixture
async def fake_llm(aiohttp_server_factory):
    fake = FakeLLM()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.chat)
    port = await aiohttp_server_factory(app)
    fake.endpoint = LlmEndpoint(f"http://127.0.0.1:{port}/v1", "fake-model", timeout_s=1.0)
    return fake


@pytest.fixture
async def aiohttp_server_factory():
    runners = []

    async def start(app: web.Application) -> int:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the bound port

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_a_schema_valid_plan_is_used_on_the_render_grid(fake_llm):
    fake_llm.answer = web.json_response(completion(json.dumps(GOOD)))
    outcome = await llm_plan(REQUEST, fps=4, endpoint=fake_llm.endpoint)
    assert outcome.planner == "llm" and outcome.fallback_reason is None
    shots = outcome.plan.shots
    assert [s.camera_angle for s in shots] == ["wide", "low-angle"]
    assert shots[0].duration == 3.0 and shots[0].frame_count == 12, "snapped to the render grid"
    assert "Dragon" in shots[0].characters, "a named character the model left out is added to shot 1"
    builtin = plan_scene(REQUEST, fps=4).shots[0]
    assert (shots[1].setting, shots[1].time_of_day, shots[1].palette) == (builtin.setting, builtin.time_of_day, builtin.palette)
    sent = fake_llm.requests[0]
    assert sent["model"] == "fake-model" and sent["response_format"]["json_schema"]["schema"] == PLAN_SCHEMA
    assert json.loads(sent["messages"][1]["content"])["characters"] == ["Kai", "Dragon"]


@pytest.mark.parametrize(("answer", "says"), [
    (lambda: web.json_response(completion("{not json")), "malformed JSON"),
    (lambda: web.json_response(completion(json.dumps({"shots": [{"camera_angle": "wide"}]}))), "violates the schema"),
    (lambda: web.json_response(completion(json.dumps({"shots": []}))), "violates the schema"),
    (lambda: web.json_response(completion(None, refusal="I can't help with that")), "refused"),
    (lambda: web.json_response({"error": "overloaded"}, status=503), "failed: HTTPStatusError"),
    (lambda: web.json_response({"object": "list"}), "not a chat completion"),
])
async def test_every_failure_falls_back_to_the_builtin_plan_and_says_why(fake_llm, answer, says):
    fake_llm.answer = answer()
    outcome = await llm_plan(REQUEST, fps=4, endpoint=fake_llm.endpoint)
    assert outcome.planner == "builtin" and says in outcome.fallback_reason
    assert outcome.plan == plan_scene(REQUEST, fps=4)


async def test_a_slow_model_times_out_into_the_builtin_plan(fake_llm):
    fake_llm.answer = web.json_response(completion(json.dumps(GOOD)))
    fake_llm.delay_s = 3.0
    outcome = await llm_plan(REQUEST, fps=4, endpoint=fake_llm.endpoint)
    assert outcome.planner == "builtin" and "did not answer within 1 s" in outcome.fallback_reason


async def test_an_unreachable_endpoint_falls_back():
    outcome = await llm_plan(REQUEST, fps=4, endpoint=LlmEndpoint("http://127.0.0.1:9/v1", "m", timeout_s=1.0))
    assert outcome.planner == "builtin" and "failed: ConnectError" in outcome.fallback_reason


async def test_a_blank_description_is_still_an_error():
    with pytest.raises(ValueError, match="blank"):
        await llm_plan(REQUEST.model_copy(update={"description": "  "}), fps=4, endpoint=LlmEndpoint("http://x/v1", "m"))


async def test_a_server_that_refuses_json_schema_is_asked_with_a_schema_in_json_object(fake_llm):
    fake_llm.refuse_json_schema = True
    fake_llm.answer = web.json_response(completion(json.dumps(GOOD)))
    outcome = await llm_plan(REQUEST, fps=4, endpoint=fake_llm.endpoint)
    assert outcome.planner == "llm", outcome.fallback_reason
    forms = [r["response_format"] for r in fake_llm.requests]
    assert [f["type"] for f in forms] == ["json_schema", "json_object"] and forms[1]["schema"] == PLAN_SCHEMA
    await llm_plan(REQUEST, fps=4, endpoint=fake_llm.endpoint)
    assert [r["response_format"]["type"] for r in fake_llm.requests[2:]] == ["json_object"], "remembered"


async def test_an_error_that_is_not_about_the_format_is_not_retried(fake_llm):
    fake_llm.answer = web.json_response({"error": {"message": "model not loaded"}}, status=500)
    outcome = await llm_plan(REQUEST, fps=4, endpoint=fake_llm.endpoint)
    assert outcome.planner == "builtin" and "500" in outcome.fallback_reason
    assert len(fake_llm.requests) == 1
