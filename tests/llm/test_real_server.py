"""The LLM planner against a real OpenAI-compatible server (llama-cpp-python's, on the test's own
tiny model): the request is accepted, decoding is constrained by the plan's JSON Schema, and the
answer becomes the plan, directly and through the planner stage on Kafka."""

from __future__ import annotations

import httpx

from director import llm_planner
from director.llm_planner import LlmEndpoint, LlmPlan, llm_plan, request_body
from eventlog.follow import produce, scene_envelope
from events.models import SceneRequested, ShotPlanned
from foundation.kafka import read_topic

REQUEST = SceneRequested(scene_id="s", session_id="s", description="Kai fights the dragon on the bridge at night",
                         characters=["Kai", "Dragon"])


async def test_the_server_answers_schema_valid_json_and_it_becomes_the_plan(llama_server):
    endpoint = LlmEndpoint(llama_server, "tower-test", timeout_s=60)
    outcome = await llm_plan(REQUEST, fps=4, endpoint=endpoint)
    assert outcome.planner == "llm", outcome.fallback_reason
    # llama-cpp-python refuses OpenAI's json_schema form; the planner asked again in its own.
    assert llm_planner._accepted_format[f"{llama_server}/chat/completions"] == "json_object"  # noqa: SLF001
    [shot] = outcome.plan.shots  # the model's shortest valid plan: one shot (tests/llm/model.py)
    assert shot.description.startswith("shot 1/1 by the model")
    assert shot.duration == 1.0 and shot.frame_count == 4, "1 s, on the render grid"
    assert {"Kai", "Dragon"} <= set(shot.characters), "named characters the model left out are added"
    assert "planned by the LLM backend" in outcome.plan.notes


async def test_decoding_is_constrained_by_the_schema(llama_server):
    """Without the schema the same model says something else entirely: the constraint is real."""
    async with httpx.AsyncClient(timeout=60) as client:
        endpoint = LlmEndpoint(llama_server, "tower-test")
        constrained = request_body(REQUEST, endpoint, "json_object") | {"max_tokens": 400}
        free = {**constrained, "max_tokens": 40}
        del free["response_format"]
        answers = [await client.post(f"{llama_server}/chat/completions", json=body) for body in (constrained, free)]
    contents = [a.raise_for_status().json()["choices"][0]["message"]["content"] for a in answers]
    LlmPlan.model_validate_json(contents[0])
    assert not contents[1].lstrip().startswith('{"shots"'), contents[1]


async def test_the_planner_stage_plans_with_the_real_server(llama_server, settings, workers, tower_env):
    workers.env = {**tower_env, "TOWER_PLANNER": "llm", "TOWER_PLANNER_LLM_URL": llama_server,
                   "TOWER_PLANNER_LLM_MODEL": "tower-test", "TOWER_PLANNER_LLM_TIMEOUT_S": "60"}
    workers.start("planner")
    await produce(settings, [scene_envelope(REQUEST.model_copy(update={"scene_id": "scene-real-llm"}))])
    records = await workers.watch(read_topic(settings.kafka_bootstrap, settings.topic("shot.planned"), expect=1,
                                             timeout_s=90))
    [planned] = [ShotPlanned.model_validate_json(r.value) for r in records]
    assert planned.planner == "llm" and planned.planner_fallback_reason is None
    assert planned.shot.shot_count == 1 and {"Kai", "Dragon"} <= set(planned.shot.characters)
