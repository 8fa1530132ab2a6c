"""The learner publishes one regression alert on quality.alerts when a new workflow version
scores significantly worse than the one before it (real broker and database; the scores are
produced directly, as another scorer would)."""

from __future__ import annotations

from director.refiner import refine
from eventlog.follow import produce
from events.envelope import Envelope, header_map, new_event_id
from events.models import QualityScored, RegressionDetected
from events.topics import QUALITY_SCORED
from foundation.kafka import ensure_topics, read_topic
from tests.integration.harness import wait_for_group


def scored(planned, scene_id: str, workflow: str, composite: float) -> Envelope:
    refined = refine(planned.model_copy(update={"scene_id": scene_id}), {}, width=64, height=64,
                     workflow=workflow, learner_version="1")
    value = QualityScored(**refined.model_dump(), status="ok", composite=composite, passed=True,
                          scorer_version="t", device="cpu")
    return Envelope(id=new_event_id(), source="test", type=QUALITY_SCORED.event_type, scene_id=scene_id,
                    session_id=value.session_id, value=value)


async def test_a_worse_workflow_version_is_alerted_once(settings, workers, tower_env, kai_shots):
    # The topics first: a learner that sees them appear after it joined rebalances, and redelivers.
    await ensure_topics(settings)
    workers.start("learner")
    planned = kai_shots[0].model_copy(update={"quality_threshold": 0.1})  # every score passes: no retries
    await produce(settings, [scored(planned, f"old-{i}", "wf-old", 0.8 + 0.01 * (i % 3)) for i in range(30)])
    await workers.watch(wait_for_group(settings.kafka_bootstrap, f"{tower_env['TOWER_GROUP_PREFIX']}-learner",
                                       [settings.topic("quality.scored")]))
    await produce(settings, [scored(planned, f"new-{i}", "wf-new", 0.5 + 0.01 * (i % 3)) for i in range(25)])
    alerts = await workers.watch(read_topic(settings.kafka_bootstrap, settings.topic("quality.alerts"), expect=1, timeout_s=60))
    await workers.watch(wait_for_group(settings.kafka_bootstrap, f"{tower_env['TOWER_GROUP_PREFIX']}-learner",
                                       [settings.topic("quality.scored")]))
    alerts = await read_topic(settings.kafka_bootstrap, settings.topic("quality.alerts"), timeout_s=3)
    # One alert event (a redelivery may send it again, under the same id: readers keep one).
    ids = {header_map(record.headers)["ce_id"] for record in alerts}
    assert len(ids) == 1, f"one alert per version, though 20 scores came after the first checkpoint: {len(alerts)} records"
    alert = RegressionDetected.model_validate_json(alerts[0].value)
    assert (alert.workflow, alert.previous_workflow, alert.samples) == ("wf-new", "wf-old", 10)
    assert alert.previous_mean - alert.mean > 0.25 and alert.p_value < 0.01
