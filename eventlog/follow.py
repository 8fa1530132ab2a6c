"""Submitting a scene and following it through the topics until every shot has a final score."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from director.escalation import is_final
from events.codec import Malformed, decode_value
from events.envelope import Envelope, header_map, new_event_id, scene_of_key
from events.models import (
    FrameRendered,
    PromptRefined,
    QualityScored,
    RenderProgress,
    SceneRequested,
    ShotPlanned,
    ShotReviewRequested,
)
from events.topics import (
    BY_NAME,
    DEAD_LETTER_SUFFIX,
    SCENE_REQUESTED,
    SIDE_TOPICS,
    TOPICS,
    dead_letter_topic,
)
from foundation.kafka import partitions_of
from foundation.publisher import Publisher
from foundation.settings import Settings


def new_scene_id() -> str:
    return f"scene-{uuid.uuid4().hex[:12]}"


def scene_envelope(request: SceneRequested, source: str = "tower/cli") -> Envelope[SceneRequested]:
    return Envelope(
        id=new_event_id(),
        source=source,
        type=SCENE_REQUESTED.event_type,
        scene_id=request.scene_id,
        session_id=request.session_id,
        value=request,
    )


async def produce(settings: Settings, envelopes: list[Envelope]) -> None:
    async with Publisher(settings, client_id="tower-cli") as publisher:
        await publisher.publish(envelopes)


@dataclass
class SceneProgress:
    """What the topics have said about one scene so far."""

    scene_id: str
    shot_count: int | None = None
    finals: dict[int, QualityScored] = field(default_factory=dict)
    events: list[tuple[str, object]] = field(default_factory=list)

    def observe(self, topic: str, value: object) -> None:
        self.events.append((topic, value))
        if isinstance(value, ShotPlanned):
            self.shot_count = value.shot.shot_count
        if isinstance(value, QualityScored) and is_final(value):
            self.finals[value.shot.shot_number] = value

    @property
    def done(self) -> bool:
        return self.shot_count is not None and len(self.finals) >= self.shot_count


def worth_showing(value: object) -> bool:
    """Progress is shown when queued and at the halfway step; everything else always."""
    if isinstance(value, RenderProgress):
        return value.kind == "queued" or (value.kind == "progress" and bool(value.steps) and value.step == value.steps // 2)
    return True


def describe(topic: str, value: object) -> str:
    if isinstance(value, RenderProgress):
        if value.kind == "queued":
            return f"shot {value.shot_number} attempt {value.attempt}: queued on {value.server} (position {value.queue_position})"
        return (f"shot {value.shot_number} attempt {value.attempt}: rendering {value.fraction or 0:.0%} "
                f"({value.step}/{value.steps}, {value.backend})")
    if isinstance(value, SceneRequested):
        return f"scene requested: {value.description!r}"
    if isinstance(value, ShotPlanned):
        s = value.shot
        if value.retry_reason:
            return f"shot {s.shot_number}/{s.shot_count} attempt {value.attempt}: retry ({value.escalation}) because {value.retry_reason}"
        return f"shot {s.shot_number}/{s.shot_count} attempt {value.attempt}: planned {s.camera_angle}, {s.duration}s, {s.action}"
    if isinstance(value, PromptRefined):
        return (f"shot {value.shot.shot_number} attempt {value.attempt}: prompt refined, modifier "
                f"{value.prompt.modifier} (p={value.prompt.modifier_probability:.2f})")
    if isinstance(value, FrameRendered):
        what = f"{len(value.frames)} frames in {value.render_ms:.0f} ms" if value.status == "ok" else f"FAILED: {value.reason}"
        return f"shot {value.shot.shot_number} attempt {value.attempt}: rendered {what}"
    if isinstance(value, QualityScored):
        verdict = "accepted" if value.passed else ("final, needs human review" if is_final(value) else "retrying")
        return (f"shot {value.shot.shot_number} attempt {value.attempt}: scored {value.composite:.3f} "
                f"({value.status}, {verdict})")
    if isinstance(value, ShotReviewRequested):
        return f"shot {value.shot_number}: NEEDS HUMAN REVIEW: {value.reason}"
    return f"{topic}: {value!r}"


class SceneFailed(RuntimeError):
    """An event of the scene was dead-lettered: the shot it belongs to cannot finish."""

    def __init__(self, scene_id: str, headers: dict[str, str]) -> None:
        self.headers = headers
        super().__init__(
            f"scene {scene_id}: a {headers.get('dlq_original_topic', '?')} event was dead-lettered by "
            f"{headers.get('dlq_consumer', '?')}: {headers.get('dlq_error_class', '?')}: "
            f"{headers.get('dlq_error_message', '?')} (see `tower dlq`)"
        )


@dataclass(frozen=True)
class SceneRecord:
    """One message of a scene as read from its topic: ``topic`` is the name without the topic
    prefix (``shot.planned``, ``shot.planned.dlq``); ``value`` is the decoded event, ``None`` for a
    dead letter or a value that does not decode."""

    topic: str
    partition: TopicPartition
    offset: int
    headers: dict[str, str]
    value: object | None

    @property
    def dead_letter(self) -> bool:
        return self.topic.endswith(DEAD_LETTER_SUFFIX)


@dataclass(frozen=True)
class Tick:
    """Yielded by :func:`tail_scene` after each poll, so its reader can keep time; ``caught_up``
    when every partition has been read to its end offset (everything written so far was read)."""

    caught_up: bool


async def tail_scene(
    settings: Settings,
    scene_id: str,
    *,
    start_offsets: dict[TopicPartition, int] | None = None,
    since_ms: int | None = None,
    poll_ms: int = 500,
) -> AsyncIterator[SceneRecord | Tick]:
    """Every message keyed by ``scene_id`` on the pipeline, side and dead-letter topics, as it
    reaches Kafka, from ``start_offsets`` (else from the first message at or after ``since_ms``,
    else from the beginning), and a :class:`Tick` after each poll. Joins no consumer group and
    commits nothing; use with :func:`contextlib.aclosing` so the consumer stops when the caller does."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, client_id="tower-follow"
    )
    await consumer.start()
    try:
        partitions = await topic_partitions(consumer, settings)
        consumer.assign(partitions)
        starts: dict[TopicPartition, int | None] = dict.fromkeys(partitions)
        if start_offsets:
            starts.update({tp: start_offsets[tp] for tp in partitions if tp in start_offsets})
        elif since_ms is not None:
            # The ends first: a message appended between the two requests is then at or after its
            # partition's end, so it is read; taken the other way round, a partition with no
            # message at or after since_ms would start past one that arrived in between.
            ends = await consumer.end_offsets(partitions)
            found = await consumer.offsets_for_times(dict.fromkeys(partitions, since_ms))
            starts = {tp: (found[tp].offset if found.get(tp) else ends[tp]) for tp in partitions}
        for tp, offset in starts.items():
            if offset is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)
        while True:
            batches = await consumer.getmany(timeout_ms=poll_ms)
            for records in batches.values():
                for record in records:
                    if (found := scene_record(settings, scene_id, record)) is not None:
                        yield found
            caught_up = False
            if not any(batches.values()):  # nothing fetched: check against the brokers' end offsets
                ends = await consumer.end_offsets(partitions)
                caught_up = all([await consumer.position(tp) >= end for tp, end in ends.items()])
            yield Tick(caught_up)
    finally:
        await consumer.stop()


def scene_record(settings: Settings, scene_id: str, record: ConsumerRecord) -> SceneRecord | None:
    """``record`` as a :class:`SceneRecord` if it belongs to ``scene_id``, else ``None``."""
    if record.key is None or scene_of_key(record.key) != scene_id:
        return None
    return decode_record(settings, record)


def decode_record(settings: Settings, record: ConsumerRecord) -> SceneRecord:
    """A record of one of :func:`topic_partitions`, decoded once (``value`` ``None`` for a dead
    letter or a value that does not decode)."""
    tp = TopicPartition(record.topic, record.partition)
    name = record.topic[len(settings.topic_prefix):]
    value = None
    if not name.endswith(DEAD_LETTER_SUFFIX):
        decoded = decode_value(BY_NAME[name].model, record.value)
        value = None if isinstance(decoded, Malformed) else decoded
    return SceneRecord(name, tp, record.offset, header_map(record.headers), value)


async def scene_history(
    settings: Settings, scene_id: str, *, since_ms: int, until: dict[TopicPartition, int], poll_ms: int = 200
) -> list[SceneRecord]:
    """The scene's messages from the first at or after ``since_ms`` up to (not including) the
    offsets ``until``, in each partition's order: what a live tail positioned at ``until`` has not
    seen. Joins no consumer group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, client_id="tower-history"
    )
    await consumer.start()
    try:
        partitions = [tp for tp, end in until.items() if end > 0]
        found = await consumer.offsets_for_times(dict.fromkeys(partitions, since_ms))
        starts = {tp: found[tp].offset for tp in partitions if found.get(tp) and found[tp].offset < until[tp]}
        if not starts:
            return []
        consumer.assign(list(starts))
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        history: list[SceneRecord] = []
        remaining = set(starts)
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=poll_ms)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= until[tp]:
                        break
                    if (found_record := scene_record(settings, scene_id, record)) is not None:
                        history.append(found_record)
            for tp in list(remaining):
                if await consumer.position(tp) >= until[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
        return history
    finally:
        await consumer.stop()


async def follow_scene(
    settings: Settings,
    scene_id: str,
    *,
    start_offsets: dict[TopicPartition, int] | None = None,
    timeout_s: float = 300.0,
    on_event: Callable[[str, object], None] | None = None,
) -> SceneProgress:
    """Read the scene's events from ``start_offsets`` (default: the beginning) until every shot
    has a final score. Raise :class:`SceneFailed` as soon as one of its events is dead-lettered
    (the scene cannot finish then), :class:`TimeoutError` naming the open shots after ``timeout_s``."""
    progress = SceneProgress(scene_id)
    deadline = time.monotonic() + timeout_s
    async with aclosing(tail_scene(settings, scene_id, start_offsets=start_offsets)) as records:
        async for record in records:
            if isinstance(record, SceneRecord):
                if record.dead_letter:
                    raise SceneFailed(scene_id, record.headers)
                if record.value is not None:
                    progress.observe(record.topic, record.value)
                    if on_event:
                        on_event(record.topic, record.value)
            if progress.done:
                return progress
            if time.monotonic() > deadline:
                open_shots = sorted(set(range(1, (progress.shot_count or 0) + 1)) - set(progress.finals))
                raise TimeoutError(
                    f"scene {scene_id} not finished after {timeout_s:.0f}s; shots without a final "
                    f"score: {open_shots or 'plan not seen yet'}. Are the workers running (`tower worker all`)?"
                )
    raise AssertionError("tail_scene ends only when its consumer fails")


async def topic_partitions(consumer: AIOKafkaConsumer, settings: Settings) -> list[TopicPartition]:
    """The partitions of every pipeline topic, its dead-letter topic, and the side topics."""
    names = [settings.topic(spec.name) for spec in TOPICS + SIDE_TOPICS]
    names += [dead_letter_topic(settings.topic(spec.name)) for spec in TOPICS]
    partitions = []
    for name in names:
        partitions.extend(await partitions_of(consumer, name))
    return partitions


async def end_offsets(settings: Settings) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.end_offsets(await topic_partitions(consumer, settings))
    finally:
        await consumer.stop()
