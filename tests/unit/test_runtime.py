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
from foundation.settings import Settings
from store.projections import Origin


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
    # A media folder the worker may not write to is configuration, not an outage to wait out.
    assert not is_outage(PermissionError(13, "Permission denied", "media/scene-1"))


def test_dead_letter_headers_are_kept_byte_for_byte_repeats_and_all():
    origin = Origin("planner", "scene.requested", 0, 1)
    original = [("ce_id", b"abc"), ("trace", b"\xff\xfe not utf-8"), ("trace", b"second")]
    headers = dead_letter_headers(original, origin, "ValueError", "bad")
    assert headers[:3] == original
    assert [name for name, _ in headers[3:]][:2] == ["dlq_original_topic", "dlq_original_partition"]


def test_an_oversize_dead_letter_is_truncated_with_its_size_and_hash():
    import hashlib

    from agents.runtime import fit_dead_letter

    value = b"x" * 1_040_000
    headers = [("ce_id", b"abc"), ("dlq_error_class", b"ValidationError")]
    kept, out = fit_dead_letter(value, headers, b"key", 1_000_000)
    named = dict(out)
    assert len(kept) + sum(len(n) + len(v) for n, v in out) < 1_000_000 - 1024
    assert value.startswith(kept) and len(kept) > 900_000
    assert named["dlq_truncated"] == b"true" and named["dlq_original_size"] == b"1040000"
    assert named["dlq_original_sha256"] == hashlib.sha256(value).hexdigest().encode()
    small, same = fit_dead_letter(b"{}", headers, b"key", 1_000_000)
    assert (small, same) == (b"{}", headers)
    # Original headers too large to carry: dropped, and the letter says so.
    _, trimmed = fit_dead_letter(b"{}", [("huge", b"h" * 600_000), *headers], b"k", 1_000_000)
    assert "huge" not in dict(trimmed) and dict(trimmed)["dlq_headers_dropped"] == b"2 original header(s), 600012 bytes"


class RefusingTopic:
    """A publisher whose broker refuses what it is sent ``refusals`` times."""

    def __init__(self, error: Exception, refusals: int) -> None:
        self.error, self.refusals, self.sent = error, refusals, []

    async def publish_raw(self, topic, value, *, key, headers):  # noqa: ANN001, ANN201
        if self.refusals > 0:
            self.refusals -= 1
            raise self.error
        self.sent.append((key, value, headers))


def refusing_runner(topic: RefusingTopic) -> StageRunner:
    stage = Flaky(failures=0)
    stage.settings = Settings(handler_backoff_s=0.0, handler_retries=2)
    runner = StageRunner(stage, stage.settings, faust.App("test-dlq", web_enabled=False))
    runner._publisher = topic  # noqa: SLF001 - the broker is the part under test
    runner._letters = {"t.dlq": set()}  # noqa: SLF001 - nothing dead-lettered before
    return runner


async def test_a_dead_letter_the_broker_finds_too_large_goes_without_its_value():
    from aiokafka.errors import MessageSizeTooLargeError
    from faust.exceptions import ProducerSendError

    wrapped = ProducerSendError("send failed")
    wrapped.__cause__ = MessageSizeTooLargeError("The message is 1040000 bytes")
    topic = RefusingTopic(wrapped, refusals=1)
    await refusing_runner(topic).dead_letter(Message(b"x" * 5000, [("ce_id", b"a")]), Origin("p", "t", 0, 1),
                                             "ValidationError", "too big")
    (key, value, headers), = topic.sent
    assert value == b"" and b"1040000 bytes" in dict(headers)["dlq_value_dropped"]


async def test_a_dead_letter_refused_for_another_reason_still_leaves_within_its_retries():
    topic = RefusingTopic(RuntimeError("policy says no"), refusals=3)
    await refusing_runner(topic).dead_letter(Message(b"{}", []), Origin("p", "t", 0, 1), "ValueError", "bad")
    (key, value, headers), = topic.sent
    assert value == b"" and dict(headers)["dlq_value_dropped"].startswith(b"RuntimeError: policy says no")


async def test_a_message_dead_lettered_before_is_not_dead_lettered_again():
    topic = RefusingTopic(RuntimeError("unused"), refusals=0)
    runner = refusing_runner(topic)
    runner._letters = {"t.dlq": {("t", 0, 1)}}  # noqa: SLF001 - as read from the dead-letter topic
    await runner.dead_letter(Message(b"{}", []), Origin("p", "t", 0, 1), "ValueError", "bad")
    assert topic.sent == []
    await runner.dead_letter(Message(b"{}", []), Origin("p", "t", 0, 2), "ValueError", "bad")
    assert len(topic.sent) == 1 and ("t", 0, 2) in runner._letters["t.dlq"]  # noqa: SLF001
