"""The runtime's Prometheus metrics move with each outcome of a message, without a broker."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client import REGISTRY

from agents.runtime import StageRunner
from agents.stage import Stage
from events.codec import decode_value
from events.envelope import Envelope
from events.models import SceneRequested
from events.topics import SCENE_REQUESTED
from foundation.metrics import start_metrics_server
from foundation.settings import Settings
from store.projections import Origin
from tests.unit.test_learning import scored
from tests.unit.test_runtime import Flaky, Unreachable, good_message

TOPIC = "t1.scene.requested"


@dataclass
class Message:
    value: Any
    headers: Any
    key: bytes = b"scene-kai"
    topic: str = TOPIC
    partition: int = 1
    offset: int = 42

    @property
    def tp(self) -> tuple[str, int]:
        return (self.topic, self.partition)


class FakePublisher:
    """What the runner uses of :class:`foundation.publisher.Publisher`, with no broker: it keeps what is sent."""

    def __init__(self, sent: list) -> None:
        self.sent = sent

    async def publish(self, envelopes: list[Envelope]) -> list:
        self.sent.extend(envelopes)
        return []

    async def enqueue(self, envelope: Envelope) -> asyncio.Future:
        self.sent.append(envelope)
        delivered = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered

    async def publish_raw(self, topic: str, value: bytes | None, *, key: bytes | None, headers: list) -> None:
        self.sent.append({"topic": topic, "value": value, "key": key, "headers": headers})


class FakeConsumer:
    def __init__(self) -> None:
        self.highwaters: dict[tuple[str, int], int | None] = {}

    def highwater(self, tp: tuple[str, int]) -> int | None:
        return self.highwaters[tp]


class FakeApp:
    """What the runner uses of a Faust app: the consumer's high watermarks (and, here, a list of
    what the runner's publisher sent)."""

    def __init__(self) -> None:
        self.sent: list = []
        self.consumer = FakeConsumer()


@dataclass
class Scoring(Stage):
    """Answers every scene with two quality.scored events: one scored, one failed."""

    outputs: list = field(default_factory=list)
    name: str = field(default_factory=lambda: f"scoring-{uuid.uuid4().hex[:6]}")
    inputs: tuple = (SCENE_REQUESTED,)
    settings: Settings = field(default_factory=Settings)

    async def handle(self, envelope: Envelope, origin: Origin) -> list[Envelope]:
        return [envelope.derive(value, source="t", index=i) for i, value in enumerate(self.outputs)]


def runner_for(stage: Stage) -> tuple[StageRunner, FakeApp]:
    stage.name = f"{stage.name}-{uuid.uuid4().hex[:6]}"  # a fresh label set per test: the registry is global
    app = FakeApp()
    runner = StageRunner(stage, stage.settings, app)  # type: ignore[arg-type]
    runner._publisher = FakePublisher(app.sent)  # noqa: SLF001 - no broker here
    runner._letters = {f"{TOPIC}.dlq": set()}  # noqa: SLF001 - nothing dead-lettered before; no broker here
    return runner, app


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def message_of(request: SceneRequested, **fields: Any) -> Message:
    good = good_message(request)
    return Message(good.value, good.headers, **fields)


async def test_a_handled_message_is_counted_timed_and_its_scores_observed(kai_request, kai_shots):
    stage = Scoring(outputs=[scored(kai_shots[0], "m", 0.83), scored(kai_shots[1], "m", 0.0, status="failed")])
    runner, app = runner_for(stage)
    app.consumer.highwaters[TOPIC, 1] = 50
    await runner.process(SCENE_REQUESTED, kai_request, message_of(kai_request))
    assert len(app.sent) == 2
    labels = {"stage": stage.name, "topic": TOPIC}
    assert sample("tower_events_handled_total", **labels) == 1
    assert sample("tower_handler_seconds_count", **labels) == 1
    assert 0 <= sample("tower_handler_seconds_sum", **labels) < 5
    assert sample("tower_events_failed_total", **labels, kind="error") is None
    # Only the "ok" score is observed, in the 0.9 bucket and not the 0.8 one.
    assert sample("tower_composite_score_count", stage=stage.name) == 1
    assert sample("tower_composite_score_sum", stage=stage.name) == 0.83
    assert sample("tower_composite_score_bucket", stage=stage.name, le="0.8") == 0
    assert sample("tower_composite_score_bucket", stage=stage.name, le="0.9") == 1
    # Offset 42 handled, the partition's next offset is 50: 7 messages behind.
    group = stage.settings.app_id(stage.name)
    assert sample("tower_consumer_lag", group=group, topic=TOPIC, partition="1") == 7


async def test_lag_is_never_negative_and_unknown_highwaters_are_skipped(kai_request):
    stage = Flaky(failures=0)
    runner, app = runner_for(stage)
    group = stage.settings.app_id(stage.name)
    app.consumer.highwaters[TOPIC, 1] = 10  # a stale fetch
    await runner.process(SCENE_REQUESTED, kai_request, message_of(kai_request))
    assert sample("tower_consumer_lag", group=group, topic=TOPIC, partition="1") == 0
    app.consumer.highwaters[TOPIC, 2] = None  # nothing fetched yet
    await runner.process(SCENE_REQUESTED, kai_request, message_of(kai_request, partition=2))
    assert sample("tower_consumer_lag", group=group, topic=TOPIC, partition="2") is None
    # A consumer that cannot answer (not started, partition revoked) costs the message nothing.
    del app.consumer.highwaters[TOPIC, 1]
    await runner.process(SCENE_REQUESTED, kai_request, message_of(kai_request, offset=60))
    assert sample("tower_events_handled_total", stage=stage.name, topic=TOPIC) == 3
    assert sample("tower_consumer_lag", group=group, topic=TOPIC, partition="1") == 0


async def test_failures_are_counted_per_try_and_the_dead_letter_by_error_class(kai_request):
    stage = Flaky(failures=3)  # two retries: three tries, then the dead letter
    runner, app = runner_for(stage)
    app.consumer.highwaters[TOPIC, 1] = 43
    await runner.process(SCENE_REQUESTED, kai_request, message_of(kai_request))
    labels = {"stage": stage.name, "topic": TOPIC}
    assert sample("tower_events_failed_total", **labels, kind="error") == 3
    assert sample("tower_events_dead_lettered_total", **labels, error_class="RuntimeError") == 1
    assert sample("tower_events_handled_total", **labels) is None
    assert app.sent[0]["headers"]  # the dead letter itself went out
    assert sample("tower_consumer_lag", group=stage.settings.app_id(stage.name), topic=TOPIC, partition="1") == 0


async def test_an_outage_counts_as_outage_and_the_message_is_still_handled(kai_request):
    stage = Unreachable(outage=2)
    runner, _ = runner_for(stage)
    await runner.process(SCENE_REQUESTED, kai_request, message_of(kai_request))
    labels = {"stage": stage.name, "topic": TOPIC}
    assert sample("tower_events_failed_total", **labels, kind="outage") == 2
    assert sample("tower_events_failed_total", **labels, kind="error") is None
    assert sample("tower_events_handled_total", **labels) == 1


async def test_malformed_messages_are_counted_as_dead_letters(kai_request):
    stage = Flaky(failures=0)
    runner, _ = runner_for(stage)
    malformed = decode_value(SceneRequested, b"[1, 2]")
    await runner.process(SCENE_REQUESTED, malformed, Message(b"[1, 2]", []))
    await runner.process(SCENE_REQUESTED, kai_request, Message(b"{}", [("ce_id", b"x")], offset=43))
    labels = {"stage": stage.name, "topic": TOPIC}
    assert sample("tower_events_dead_lettered_total", **labels, error_class="ValidationError") == 1
    assert sample("tower_events_dead_lettered_total", **labels, error_class="EnvelopeError") == 1
    assert stage.calls == 0 and sample("tower_events_handled_total", **labels) is None


def test_metrics_server_serves_the_registry_on_a_free_port():
    assert start_metrics_server(Settings(metrics_port=None)) is None
    port = start_metrics_server(Settings(metrics_port=0, metrics_host="127.0.0.1"))
    assert port and port > 0
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for name in ("tower_events_handled_total", "tower_events_failed_total", "tower_events_dead_lettered_total",
                 "tower_handler_seconds", "tower_consumer_lag", "tower_composite_score"):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
