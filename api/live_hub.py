"""One Kafka tail per API process for every live stream, fanned out in memory per scene.

The hub's consumer (no group, nothing committed) reads every partition of the pipeline, side and
dead-letter topics from where they ended when it started. Each record is decoded once and, if its
scene has a :class:`SceneChannel`, appended to the channel as a :class:`Delivery`: the SSE frame
(encoded once for every watcher) and the cursor after it. A channel holds its scene's deliveries
from the scene's first event, in one order, so:

- a watcher that joins late takes a snapshot of the channel and then its live queue, in the same
  event-loop step: nothing is missed or sent twice;
- a watcher that reconnects with ``Last-Event-ID`` skips what its cursor says it has;
- a scene the hub did not see start (requested before the hub started, or evicted) is read once
  from Kafka up to where the hub stood when the channel opened, for all of its watchers together,
  while the hub keeps the live records of it aside; then it is a channel like any other;
- an event the log holds twice (a stage that was redelivered a record produces the same event id
  again: at-least-once) is sent once: the channel remembers the ids it has delivered.

A watcher's queue is bounded: one that falls that far behind is sent ``overflow`` (with the cursor
to reconnect from) and disconnected, never skipped silently, and the others are not held up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from aiokafka import AIOKafkaConsumer, TopicPartition

from eventlog.follow import SceneProgress, SceneRecord, decode_record, scene_history, topic_partitions
from events.envelope import scene_of_key
from events.topics import SCENE_REQUESTED
from foundation.kafka import ensure_topics
from foundation.settings import Settings

log = logging.getLogger("tower.api.live")
CURSOR_VERSION = "c1"
POLL_MS = 200
LOCATE_POLL_S = 0.1


def encode_cursor(positions: dict[TopicPartition, int]) -> str:
    return CURSOR_VERSION + ";" + ";".join(f"{tp.topic}|{tp.partition}|{off}" for tp, off in sorted(positions.items()))


def decode_cursor(text: str | None) -> dict[TopicPartition, int]:
    """The positions of a cursor; empty (start over) for none or one this version cannot read."""
    if not text or not text.startswith(CURSOR_VERSION + ";"):
        return {}
    positions = {}
    try:
        for part in filter(None, text.split(";")[1:]):
            topic, partition, offset = part.rsplit("|", 2)
            positions[TopicPartition(topic, int(partition))] = int(offset)
    except ValueError:
        return {}
    return positions


def sse_body(event: str, data: dict) -> bytes:
    """The ``event:`` and ``data:`` lines of an SSE frame (without its ``id:`` and end)."""
    return f"event: {event}\ndata: {json.dumps(data, default=str, separators=(',', ':'))}\n".encode()


def sse_frame(body: bytes, event_id: str | None = None) -> bytes:
    return (f"id: {event_id}\n".encode() + body if event_id else body) + b"\n"


def describe_record(record: SceneRecord) -> dict:
    h = record.headers
    body = {"topic": record.topic, "id": h.get("ce_id"), "type": h.get("ce_type"), "time": h.get("ce_time"),
            "source": h.get("ce_source"), "causation_id": h.get("ce_causationid")}
    if record.dead_letter:
        body.update({k: v for k, v in h.items() if k.startswith("dlq_")})
    elif record.value is not None:
        body["data"] = record.value.model_dump(mode="json")
    return body


@dataclass(frozen=True)
class Delivery:
    """One item of a scene's stream: an event (``record``, with the channel's cursor after it) or
    the stream's end (``record`` ``None``: ``complete``, ``failed`` or ``error``)."""

    record: SceneRecord | None
    body: bytes
    positions: dict[TopicPartition, int] | None = None
    cursor: str | None = None

    @cached_property
    def frame(self) -> bytes:
        """The whole SSE frame as a watcher that did not resume gets it (built once)."""
        return sse_frame(self.body, self.cursor)


@dataclass(eq=False)
class Watcher:
    """One client's live queue. ``overflowed``: it fell :attr:`LiveHub.queue_size` deliveries
    behind and gets nothing more; its stream tells it so and ends."""

    queue: asyncio.Queue[Delivery]
    overflowed: bool = False


@dataclass(eq=False)
class SceneChannel:
    scene_id: str
    deliveries: list[Delivery] = field(default_factory=list)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    progress: SceneProgress | None = None
    watchers: set[Watcher] = field(default_factory=set)
    # Set once the channel holds the scene from its first event; until then live records wait aside.
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    aside: list[SceneRecord] = field(default_factory=list)
    # The brokers' end offsets when every shot became final: complete once the hub has read them.
    ends_when_done: dict[TopicPartition, int] | None = None
    ended: bool = False
    event_ids: set[tuple[str, str]] = field(default_factory=set)
    history_task: asyncio.Task | None = None

    def __post_init__(self) -> None:
        self.progress = SceneProgress(self.scene_id)


class LiveHub:
    """The API process's live tail. :meth:`watch` is the only way in; everything else runs in its
    one poll task, started on the first watch (so the API starts while Kafka is down)."""

    def __init__(self, settings: Settings, *, max_scenes: int, scene_buffer: int, queue_size: int) -> None:
        self.settings = settings
        self.max_scenes = max_scenes
        self.scene_buffer = scene_buffer
        self.queue_size = queue_size
        self._channels: OrderedDict[str, SceneChannel] = OrderedDict()
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._read_to: dict[TopicPartition, int] = {}  # the next offset the hub dispatches, per partition
        self._task: asyncio.Task | None = None
        self._start_lock = asyncio.Lock()
        self._lookups: dict[str, asyncio.Future[int | None]] = {}
        self.stats = {"records": 0, "deliveries": 0, "histories": 0, "overflows": 0}

    async def watch(self, scene_id: str, since_ms: int) -> tuple[list[Delivery], Watcher]:
        """Everything of the scene so far and a queue of what follows, with nothing between them;
        call :meth:`leave` with the watcher when done. ``since_ms``: no event of the scene is older
        (where to start reading a scene the hub has not seen start)."""
        await self._start()
        channel = self._channels.get(scene_id)
        if channel is None:
            channel = self._open_from_history(scene_id, since_ms)
        self._channels.move_to_end(scene_id)
        if not channel.ready.is_set():
            await channel.ready.wait()
        return self.join(channel)

    def join(self, channel: SceneChannel) -> tuple[list[Delivery], Watcher]:
        """A new watcher of a ready channel: its deliveries so far, and a queue of the next ones.
        Synchronous on purpose: nothing can be dispatched between the snapshot and the queue."""
        watcher = Watcher(asyncio.Queue(self.queue_size))
        channel.watchers.add(watcher)
        return list(channel.deliveries), watcher

    def channel(self, scene_id: str) -> SceneChannel | None:
        return self._channels.get(scene_id)

    async def locate(self, scene_id: str, requested_at: Callable[[], Awaitable[datetime | None]], *,
                     wait_s: float, margin_ms: int) -> int | None:
        """Where :meth:`watch` should read the scene from: 0 when the tail holds it, else when it
        was requested (in ms, ``margin_ms`` earlier), as ``requested_at`` finds it; ``None`` if
        neither happens within ``wait_s``. The watchers of one scene share one lookup: a thousand
        arriving together cost one database poll, not a thousand."""
        if scene_id in self._channels:
            return 0
        await self._start()  # from now on, a scene requested is seen as it arrives
        lookup = self._lookups.get(scene_id)
        if lookup is None:
            lookup = asyncio.ensure_future(self._locate(scene_id, requested_at, wait_s, margin_ms))
            self._lookups[scene_id] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(scene_id, None))
        return await asyncio.shield(lookup)

    async def _locate(self, scene_id: str, requested_at: Callable[[], Awaitable[datetime | None]], wait_s: float,
                      margin_ms: int) -> int | None:
        deadline = time.monotonic() + wait_s
        while True:
            if scene_id in self._channels:
                return 0
            if (found := await requested_at()) is not None:
                return int(found.timestamp() * 1000) - margin_ms
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(LOCATE_POLL_S)

    def leave(self, scene_id: str, watcher: Watcher) -> None:
        channel = self._channels.get(scene_id)
        if channel is not None:
            channel.watchers.discard(watcher)

    @property
    def watchers(self) -> int:
        return sum(len(channel.watchers) for channel in self._channels.values())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for channel in self._channels.values():
            if channel.history_task is not None:
                channel.history_task.cancel()
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        async with self._start_lock:
            if self._task is not None and not self._task.done():
                return
            await ensure_topics(self.settings, timeout_s=10)
            consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False,
                                        client_id="tower-api-live")
            await consumer.start()
            try:
                self._partitions = await topic_partitions(consumer, self.settings)
                consumer.assign(self._partitions)
                self._read_to = await consumer.end_offsets(self._partitions)
                for tp, offset in self._read_to.items():
                    consumer.seek(tp, offset)
            except BaseException:
                await consumer.stop()
                raise
            self._consumer = consumer
            self._task = asyncio.create_task(self._poll(), name="tower-live-hub")
            log.info("live tail started on %d partitions", len(self._partitions))

    def _open(self, scene_id: str) -> SceneChannel:
        channel = SceneChannel(scene_id)
        self._channels[scene_id] = channel
        self._evict()
        return channel

    def _open_from_history(self, scene_id: str, since_ms: int) -> SceneChannel:
        """A channel filled from Kafka up to where the hub stands now. The bound is taken here, in
        the step that opens the channel: the poll task may dispatch before the history task first
        runs, and what it dispatches goes aside, so it must not also be history."""
        channel = self._open(scene_id)
        until = dict(self._read_to)
        channel.history_task = asyncio.create_task(self._read_history(channel, since_ms, until))
        return channel

    def _evict(self) -> None:
        """Forget the least recently used scenes nobody watches beyond :attr:`max_scenes`."""
        excess = len(self._channels) - self.max_scenes
        for scene_id in [s for s, c in self._channels.items() if not c.watchers and c.ready.is_set()][:max(excess, 0)]:
            del self._channels[scene_id]

    async def _read_history(self, channel: SceneChannel, since_ms: int, until: dict[TopicPartition, int]) -> None:
        try:
            history = await scene_history(self.settings, channel.scene_id, since_ms=since_ms, until=until)
        except Exception as exc:  # noqa: BLE001 - told to the watchers, who can reconnect
            log.warning("scene %s: reading its history failed: %s", channel.scene_id, exc)
            self._end(channel, "error", {"reason": f"reading the scene from Kafka failed: {exc}"})
        else:
            self.stats["histories"] += 1
            for record in history:
                self._append(channel, record)
        for record in channel.aside:
            self._append(channel, record)
        channel.aside.clear()
        channel.ready.set()
        self._check_ended([channel])

    async def _poll(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=POLL_MS)
                touched = self._dispatch(batches.values())
                waiting = [c for c in self._channels.values() if c.progress.done and c.ends_when_done is None
                           and not c.ended and c.ready.is_set()]
                if waiting:
                    ends = await consumer.end_offsets(self._partitions)
                    for channel in waiting:
                        channel.ends_when_done = ends
                    touched.update(waiting)
                pending = [c for c in self._channels.values() if c.ends_when_done is not None and not c.ended]
                if pending:
                    for tp in self._partitions:  # positions pass record-less offsets too
                        self._read_to[tp] = max(self._read_to[tp], await consumer.position(tp))
                    self._check_ended(pending)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every watcher is told; the next watch restarts the tail
            log.exception("the live tail failed")
            self._end_all("error", {"reason": f"the live tail failed: {exc}; reconnect with Last-Event-ID"})
            await consumer.stop()
            self._consumer = None

    def _dispatch(self, batches: Iterable[list]) -> set[SceneChannel]:
        touched: set[SceneChannel] = set()
        prefix_len = len(self.settings.topic_prefix)
        for records in batches:
            for record in records:
                self._read_to[TopicPartition(record.topic, record.partition)] = record.offset + 1
                self.stats["records"] += 1
                if record.key is None:
                    continue
                scene_id = scene_of_key(record.key)
                channel = self._channels.get(scene_id)
                if channel is None:
                    # A scene whose request the hub reads has all its events after it: a channel
                    # opened here holds the scene whole.
                    if record.topic[prefix_len:] != SCENE_REQUESTED.name:
                        continue
                    channel = self._open(scene_id)
                    channel.ready.set()
                if channel.ended:
                    continue
                scene_record = decode_record(self.settings, record)
                if channel.ready.is_set():
                    self._append(channel, scene_record)
                    touched.add(channel)
                else:
                    channel.aside.append(scene_record)
        return touched

    def _append(self, channel: SceneChannel, record: SceneRecord) -> None:
        if channel.ended:
            return
        channel.positions[record.partition] = record.offset + 1
        if (event_id := record.headers.get("ce_id")) is not None:
            # By topic: a dead letter keeps the id of the event it holds, and is news.
            if (record.topic, event_id) in channel.event_ids:
                return
            channel.event_ids.add((record.topic, event_id))
        if record.value is not None:
            channel.progress.observe(record.topic, record.value)
        positions = dict(channel.positions)
        body = sse_body("dead_letter" if record.dead_letter else record.topic, describe_record(record))
        self._deliver(channel, Delivery(record, body, positions, encode_cursor(positions)))
        if record.dead_letter:
            self._end(channel, "failed", {"scene_id": channel.scene_id,
                                          "reason": record.headers.get("dlq_error_message"),
                                          "error_class": record.headers.get("dlq_error_class"),
                                          "topic": record.headers.get("dlq_original_topic")})
        elif len(channel.deliveries) > self.scene_buffer and not channel.watchers:
            # Too long to keep: forgotten, and read again from Kafka by the next watcher.
            self._channels.pop(channel.scene_id, None)

    def _check_ended(self, channels: Iterable[SceneChannel]) -> None:
        for channel in channels:
            ends = channel.ends_when_done
            if channel.ended or ends is None:
                continue
            if all(self._read_to.get(tp, 0) >= end for tp, end in ends.items()):
                progress = channel.progress
                finals = {n: {"attempt": v.attempt, "composite": v.composite, "passed": v.passed}
                          for n, v in sorted(progress.finals.items())}
                self._end(channel, "complete", {"scene_id": channel.scene_id, "shot_count": progress.shot_count,
                                                "finals": finals})

    def _end(self, channel: SceneChannel, event: str, data: dict) -> None:
        self._deliver(channel, Delivery(None, sse_body(event, data)))
        channel.ended = True

    def _end_all(self, event: str, data: dict) -> None:
        for channel in self._channels.values():
            if not channel.ended:
                self._end(channel, event, data)
        self._channels.clear()

    def _deliver(self, channel: SceneChannel, delivery: Delivery) -> None:
        channel.deliveries.append(delivery)
        for watcher in list(channel.watchers):
            if watcher.overflowed:
                continue
            try:
                watcher.queue.put_nowait(delivery)
                self.stats["deliveries"] += 1
            except asyncio.QueueFull:
                watcher.overflowed = True
                channel.watchers.discard(watcher)
                self.stats["overflows"] += 1
                log.warning("scene %s: a watcher fell %d events behind; told to reconnect", channel.scene_id,
                            self.queue_size)

