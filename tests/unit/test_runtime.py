"""The agent loop's decisions (decode, retry, dead-letter), without a broker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import faust
import pytest

from agents.runtime import StageRunner, dead_letter_headers
from agents.stage import Stage
from events.codec import decode_value
from events.envelope import Envelope, header_map
from events.models import SceneRequested
from events.topics import SCENE_REQUESTED
from store.projections import Origin
from tower.settings import Settings


@dataclass
class Message:
    value: Any
    headers: Any
    key: bytes = b"scene-kai"
    topic: str = "scene.requested"
    partition: int = 1
    offset: int = 42


@dataclass
class Flaky(Stage):
    failures: int
    calls: int = 0
    name: str = "flaky"
    inputs: tuple = (SCENE_REQUESTED,)
    settings: Settings = field(default_factory=lambda: Settings(handler_backoff_s=0.0, handler_retries=2))

    async def handle(self, envelope: Envelope, origin: Origin) -> list[Envelope]:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(f"boom {self.calls}")
        return []


class RecordingRunner(StageRunner):
    def __init__(self, stage: Stage) -> None:
        super().__init__(stage, stage.settings, faust.App("test-runtime", web_enabled=False))
        self.produced: list = []
        self.dead: list = []

    async def produce(self, outputs: list[Envelope]) -> None:
        self.produced.append(outputs)

    async def dead_letter(self, message: Any, origin: Origin, error_class: str, reason: str) -> None:
        self.dead.append((error_class, reason))


def good_message(request: SceneRequested) -> Message:
    env = Envelope(id="e1", source="t", type=SCENE_REQUESTED.event_type, scene_id=request.scene_id,
                   session_id=request.session_id, value=request)
    return Message(request.model_dump_json().encode(), env.headers())


@pytest.mark.parametrize(("failures", "dead"), [(0, 0), (2, 0), (3, 1)])
async def test_handler_is_retried_then_dead_lettered(kai_request, failures, dead):
    stage = Flaky(failures=failures)
    runner = RecordingRunner(stage)
    message = good_message(kai_request)
    await runner.process(SCENE_REQUESTED, kai_request, message)
    assert stage.calls == min(failures + 1, 3)
    assert len(runner.dead) == dead and len(runner.produced) == 1 - dead
    if dead:
        assert runner.dead[0][0] == "RuntimeError" and "boom 3" in runner.dead[0][1]


async def test_malformed_values_and_headers_never_reach_the_handler(kai_request):
    stage = Flaky(failures=0)
    runner = RecordingRunner(stage)
    malformed = decode_value(SceneRequested, b"[1, 2]")
    await runner.process(SCENE_REQUESTED, malformed, Message(b"[1, 2]", []))
    await runner.process(SCENE_REQUESTED, kai_request, Message(b"{}", [("ce_id", b"x")]))
    assert stage.calls == 0
    assert [d[0] for d in runner.dead] == ["ValidationError", "EnvelopeError"]


def test_dead_letter_headers_keep_the_original_and_say_where_and_why():
    origin = Origin("planner", "scene.requested", 2, 17)
    headers = header_map(dead_letter_headers([("ce_id", b"abc")], origin, "ValueError", "bad"))
    assert headers["ce_id"] == "abc"
    assert (headers["dlq_original_topic"], headers["dlq_original_partition"], headers["dlq_original_offset"]) == (
        "scene.requested", "2", "17")
    assert (headers["dlq_error_class"], headers["dlq_error_message"], headers["dlq_consumer"]) == (
        "ValueError", "bad", "planner")


@dataclass
class Unreachable(Stage):
    """Its database is down for the first ``outage`` calls."""

    outage: int = 5
    calls: int = 0
    name: str = "unreachable"
    inputs: tuple = (SCENE_REQUESTED,)
    settings: Settings = field(default_factory=lambda: Settings(handler_backoff_s=0.001, handler_retries=1))

    async def handle(self, envelope: Envelope, origin: Origin) -> list[Envelope]:
        self.calls += 1
        if self.calls <= self.outage:
            raise ConnectionError("database is down")
        return []


async def test_an_outage_is_waited_out_not_dead_lettered(kai_request):
    stage = Unreachable()
    runner = RecordingRunner(stage)
    await runner.process(SCENE_REQUESTED, kai_request, good_message(kai_request))
    assert stage.calls == stage.outage + 1 > stage.settings.handler_retries + 1
    assert runner.dead == [] and len(runner.produced) == 1


async def test_a_null_value_is_dead_lettered_not_lost(kai_request):
    stage = Flaky(failures=0)
    runner = RecordingRunner(stage)
    await runner.process(SCENE_REQUESTED, None, Message(None, good_message(kai_request).headers))
    assert stage.calls == 0 and runner.dead[0][0] == "EmptyValue"


def test_outages_are_told_apart_from_bad_messages():
    import asyncpg

    from agents.runtime import is_outage

    assert is_outage(ConnectionRefusedError()) and is_outage(asyncpg.exceptions.AdminShutdownError())
    assert is_outage(RuntimeError("wrapped")) is False
    wrapped = RuntimeError("pool")
    wrapped.__cause__ = asyncpg.exceptions.ConnectionDoesNotExistError()
    assert is_outage(wrapped)
    assert not is_outage(FileNotFoundError("frame gone")) and not is_outage(ValueError("bad"))
