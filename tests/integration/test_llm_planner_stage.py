"""The planner stage with TOWER_PLANNER=llm and no model reachable: every shot.planned still
comes, from the built-in planner, and says which planner made it and why."""

from __future__ import annotations

from eventlog.follow import produce, scene_envelope
from events.models import SceneRequested, ShotPlanned
from foundation.kafka import read_topic


async def test_an_unreachable_model_falls_back_and_the_events_say_so(settings, workers, tower_env):
    workers.env = {**tower_env, "TOWER_PLANNER": "llm", "TOWER_PLANNER_LLM_URL": "http://127.0.0.1:9/v1",
                   "TOWER_PLANNER_LLM_TIMEOUT_S": "2"}
    workers.start("planner")
    await produce(settings, [scene_envelope(SceneRequested(scene_id="scene-llm", session_id="s",
                                                           description="Kai walks at dawn"))])
    records = await workers.watch(read_topic(settings.kafka_bootstrap, settings.topic("shot.planned"), expect=1, timeout_s=60))
    planned = [ShotPlanned.model_validate_json(r.value) for r in records]
    assert planned and all(p.planner == "builtin" for p in planned)
    assert all("http://127.0.0.1:9/v1 failed" in p.planner_fallback_reason for p in planned)
