"""The loop every stage runs: decode -> handle -> produce, and dead letters for what fails.

Faust acknowledges a message even when the agent raises, so nothing may escape the loop: a
message that cannot be decoded, or whose handler still fails after
``TOWER_HANDLER_RETRIES`` retries with doubling backoff, goes to ``<topic>.dlq`` with the
original key, value and headers plus ``dlq_*`` headers saying where it came from and why. A
failure that says a service is unreachable (:func:`is_outage`) is retried until it is back instead.
Outputs are awaited until the broker has them before the input is acknowledged, so an input's
offset is never committed ahead of its outputs. Each outcome is counted in the process's
Prometheus metrics (:mod:`foundation.metrics`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

import asyncpg
import faust
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError

from agents.stage import Stage
from agents.window import OrderedWindow
from events.codec import EventCodec, Malformed
from events.envelope import Envelope, EnvelopeError, header_map, open_envelope
from events.models import QualityScored
from events.topics import TopicSpec, dead_letter_topic
from foundation.kafka import read_topic
from foundation.metrics import StageMetrics
from foundation.publisher import Publisher
from foundation.settings import Settings
from store.projections import Origin

log = logging.getLogger("tower.agents")
MAX_BACKOFF_S = 10.0


# Errors that say a service (database, broker, render server, disk) is unavailable, not that the
# message is bad. Missing files are about the message's data, and a permission refused is local
# configuration that waiting does not fix: neither is an outage, so they fail (retried, then
# dead-lettered with the reason) instead of holding the partition forever.
_OUTAGES = (
    ConnectionError, TimeoutError, OSError,
    asyncpg.InterfaceError,  # includes a connection closed mid-query
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    KafkaConnectionError, KafkaTimeoutError,
)
_NOT_OUTAGES = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) says a service is unavailable rather than the message bad."""
    return any(
        isinstance(e, _OUTAGES) and not isinstance(e, _NOT_OUTAGES) for e in (exc, exc.__cause__) if e is not None
    )


def broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{server.strip()}" for server in bootstrap.split(",") if server.strip())


def build_app(stage: Stage, settings: Settings) -> faust.App:
    app_id = settings.app_id(stage.name)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=broker_url(settings.kafka_bootstrap),
        broker_client_id=app_id,
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        web_enabled=False,
        topic_disable_leader=True,
        # Topics are created by `tower topics create` with their declared partitions/retention.
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=settings.commit_interval_s,
        broker_session_timeout=settings.session_timeout_s,
        # Static membership when the worker has a stable name: a restart (even after SIGKILL)
        # rejoins as the same member and gets its partitions back without a rebalance.
        consumer_group_instance_id=settings.group_instance_id(stage.name),
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        producer_acks=-1,
        # A revoke or a stop does not wait for the event in flight (it may be waiting out an
        # outage): it is abandoned, its offset stays uncommitted, and it is redelivered.
        stream_wait_empty=False,
        producer_max_request_size=settings.max_message_bytes,
        autodiscover=False,
        datadir=str(settings.state_dir / app_id),
    )
    runner = StageRunner(stage, settings, app)
    for spec in stage.inputs:
        runner.subscribe(spec)
        if stage.reads_dead_letters:
            runner.subscribe_dead_letters(spec)

    @app.on_before_shutdown.connect
    async def _close(app: faust.App, **_: Any) -> None:  # noqa: ARG001
        await runner.stop()

    return app


class StageRunner:
    def __init__(self, stage: Stage, settings: Settings, app: faust.App) -> None:
        self.stage = stage
        self.settings = settings
        self.app = app
        self._publisher: Publisher | None = None
        self._started = False
        self._start_lock = asyncio.Lock()
        self._publisher_lock = asyncio.Lock()
        self.metrics = StageMetrics(stage.name, settings.app_id(stage.name))
        # Per dead-letter topic, what this stage has dead-lettered: (topic, partition, offset).
        self._letters: dict[str, set[tuple[str, int, int]]] = {}
        stage.publish = self.publish

    async def ensure_started(self) -> None:
        """Open the stage's resources on the first event (the agents' loop is running by then)."""
        async with self._start_lock:
            if not self._started:
                await self.stage.start()
                self._started = True

    async def stop(self) -> None:
        if self._started:
            await self.stage.stop()
            self._started = False
        if self._publisher is not None:
            await self._publisher.stop()
            self._publisher = None

    async def publisher(self) -> Publisher:
        """The worker's publisher, started on first use; a start that fails (the broker is down)
        raises, to be retried like any outage, and leaves nothing behind."""
        if self._publisher is None:
            async with self._publisher_lock:
                if self._publisher is None:
                    publisher = Publisher(self.settings, client_id=self.settings.app_id(self.stage.name))
                    try:
                        await publisher.start()
                    except BaseException:
                        await publisher.stop()
                        raise
                    self._publisher = publisher
        return self._publisher

    def subscribe(self, spec: TopicSpec) -> None:
        channel = self.app.topic(
            self.settings.topic(spec.name), key_serializer="raw", value_serializer=EventCodec(spec.model)
        )

        limit = self.stage.max_in_flight

        async def agent(stream: faust.StreamT) -> None:
            if limit == 1:  # Faust acknowledges each event when the loop takes the next
                async for event in stream.events():
                    await self.process(spec, event.value, event.message)
                return
            window = OrderedWindow(limit, ack=lambda event: event.ack())
            try:
                async for event in stream.noack().events():
                    message = event.message
                    await window.submit(event, message.tp, message.key,
                                        partial(self.process, spec, event.value, message))
            finally:
                await window.close()

        agent.__name__ = f"{self.stage.name}_{spec.name.replace('.', '_')}"
        self.app.agent(channel, name=f"{self.settings.app_id(self.stage.name)}.{spec.name}", concurrency=1)(agent)

    def subscribe_dead_letters(self, spec: TopicSpec) -> None:
        channel = self.app.topic(
            dead_letter_topic(self.settings.topic(spec.name)), key_serializer="raw", value_serializer="raw"
        )

        async def agent(stream: faust.StreamT) -> None:
            async for event in stream.events():
                await self.process_dead_letter(event.message)

        agent.__name__ = f"{self.stage.name}_{spec.name.replace('.', '_')}_dlq"
        self.app.agent(channel, name=f"{self.settings.app_id(self.stage.name)}.{spec.name}.dlq", concurrency=1)(agent)

    async def process_dead_letter(self, message: Any) -> None:
        """Hand a dead letter to the stage, waiting out outages. A dead letter cannot itself be
        dead-lettered: one the stage keeps failing on is logged and left (it stays in its topic)."""
        origin = Origin(self.stage.name, message.topic, message.partition, message.offset)
        delay = self.settings.handler_backoff_s
        failures = 0
        while True:
            try:
                await self.ensure_started()
                await self.stage.on_dead_letter(message.key, header_map(message.headers), origin)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - see the docstring
                if not is_outage(exc):
                    failures += 1
                    if failures > self.settings.handler_retries:
                        log.error("cannot record a dead letter: %s", exc, extra=_where(self.stage.name, origin),
                                  exc_info=True)
                        return
                await asyncio.sleep(delay)
                delay = min(max(delay, 0.05) * 2, MAX_BACKOFF_S)

    async def process(self, spec: TopicSpec, value: Any, message: Any) -> None:
        """Handle one message; never raises (Faust would acknowledge it anyway and it would be lost)."""
        origin = Origin(self.stage.name, message.topic, message.partition, message.offset)
        try:
            await self._process(spec, value, message, origin)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence: dead-letter, don't lose
            log.exception("unexpected failure handling a message", extra=_where(self.stage.name, origin))
            await self.dead_letter(message, origin, type(exc).__name__, _describe(exc))
        self.metrics.lag(origin.topic, origin.partition, origin.offset, self._highwater(message))

    def _highwater(self, message: Any) -> int | None:
        """The offset the broker will give the partition's next message, as of the last fetch."""
        tp = getattr(message, "tp", None)
        if tp is None:
            return None
        try:
            return self.app.consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - a gauge is never worth failing a message for
            return None

    async def _process(self, spec: TopicSpec, value: Any, message: Any, origin: Origin) -> None:
        where = _where(self.stage.name, origin)
        if value is None:  # Faust hands over a null value (a tombstone) without calling the codec
            value = Malformed(b"", "EmptyValue", "the message has no value (a tombstone?)")
        if isinstance(value, Malformed):
            await self.dead_letter(message, origin, value.error_class, value.reason)
            return
        try:
            envelope = open_envelope(value, message.headers, expected_type=spec.event_type)
        except EnvelopeError as exc:
            await self.dead_letter(message, origin, "EnvelopeError", str(exc))
            return
        where.update(scene_id=envelope.scene_id, event_id=envelope.id, **_shot_fields(envelope.value))

        delay = self.settings.handler_backoff_s
        failures = 0
        while True:
            try:
                await self.ensure_started()
                started = time.perf_counter()
                outputs = await self.stage.handle(envelope, origin)
                await self.produce(outputs)
                await self.stage.on_produced(envelope, outputs)
                self.metrics.handled(origin.topic, time.perf_counter() - started)
                log.info("handled %s -> %d event(s)", spec.name, len(outputs), extra=where)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is retried, then dead-lettered
                outage = is_outage(exc)
                self.metrics.failed(origin.topic, outage)
                if outage:
                    # The message is fine, a service is not: wait for it (the partition waits too)
                    # rather than dead-letter every message that arrives during the outage.
                    log.error("service unavailable (%s: %s); retrying in %.1fs", type(exc).__name__, exc,
                              delay, extra=where)
                else:
                    failures += 1
                    if failures > self.settings.handler_retries:
                        log.error("giving up on %s: %s", spec.name, exc, extra=where, exc_info=True)
                        await self.dead_letter(message, origin, type(exc).__name__, _describe(exc))
                        return
                    log.warning("handler failed (%s: %s), retrying in %.2fs", type(exc).__name__, exc, delay,
                                extra=where)
                await asyncio.sleep(delay)
                delay = min(max(delay, 0.05) * 2, MAX_BACKOFF_S)

    async def publish(self, envelope: Envelope) -> None:
        """Send a side event now; delivery is not awaited (best effort: a failure is logged)."""
        delivery = await (await self.publisher()).enqueue(envelope)
        delivery.add_done_callback(_log_lost_side_event)

    async def produce(self, outputs: list[Envelope]) -> None:
        await (await self.publisher()).publish(outputs)
        for envelope in outputs:
            if isinstance(envelope.value, QualityScored) and envelope.value.status == "ok":
                self.metrics.scored(envelope.value.composite)

    async def dead_letter(self, message: Any, origin: Origin, error_class: str, reason: str) -> None:
        """Send ``message`` to its dead-letter topic, retrying until the broker has it.

        It must not be acknowledged before that: while the broker is unreachable this waits (and
        so does the partition). A letter too large for the broker goes truncated
        (:func:`fit_dead_letter`); one the broker keeps refusing for another reason goes, after
        ``TOWER_HANDLER_RETRIES`` retries, without its value (the headers say why), so a message
        can never hold its partition forever.
        """
        dlq = dead_letter_topic(origin.topic)
        raw = bytes(message.value) if isinstance(message.value, bytes | bytearray) else b""
        headers = dead_letter_headers(message.headers, origin, error_class, reason)
        raw, headers = fit_dead_letter(raw, headers, message.key, self.settings.max_message_bytes)
        delay = max(self.settings.handler_backoff_s, 0.05)
        refusals = 0
        letter = (origin.topic, origin.partition, origin.offset)
        while True:
            try:
                if letter in await self._dead_lettered(dlq):
                    log.info("already dead-lettered (a replay)", extra=_where(self.stage.name, origin))
                    return
                await (await self.publisher()).publish_raw(dlq, raw, key=message.key, headers=headers)
                self._letters[dlq].add(letter)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep trying: losing the message is worse
                cause = root_cause(exc)
                if isinstance(cause, MessageSizeTooLargeError) and raw:
                    # The broker's limit is lower than TOWER_MAX_MESSAGE_BYTES says: keep the trace.
                    raw, headers = b"", headers + [("dlq_value_dropped", f"{cause}"[:500].encode())]
                    continue
                if not is_outage(exc):
                    refusals += 1
                    if refusals > self.settings.handler_retries and raw:
                        raw, headers = b"", headers + [
                            ("dlq_value_dropped", f"{type(cause).__name__}: {cause}"[:500].encode())]
                log.error("cannot dead-letter (%s: %s); retrying in %.1fs", type(cause).__name__, cause, delay,
                          extra=_where(self.stage.name, origin))
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
        self.metrics.dead_lettered(origin.topic, error_class)
        log.warning("dead-lettered: %s: %s", error_class, reason, extra=_where(self.stage.name, origin))


    async def _dead_lettered(self, dlq: str) -> set[tuple[str, int, int]]:
        """What this stage has dead-lettered to ``dlq`` (read once, then kept up to date), so a
        replay under a new consumer group does not dead-letter the same message again."""
        if dlq not in self._letters:
            try:
                records = await read_topic(self.settings.kafka_bootstrap, dlq, timeout_s=10)
            except LookupError:
                records = []
            mine = (header_map(r.headers) for r in records)
            self._letters[dlq] = {
                (h["dlq_original_topic"], int(h["dlq_original_partition"]), int(h["dlq_original_offset"]))
                for h in mine
                if h.get("dlq_consumer") == self.stage.name and h.get("dlq_original_offset", "").isdigit()
            }
        return self._letters[dlq]


# A record's framing beyond its key, value and headers (batch header, varints), generously.
RECORD_OVERHEAD_BYTES = 1024


def fit_dead_letter(
    value: bytes, headers: list[tuple[str, bytes]], key: bytes | None, max_bytes: int
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The dead letter cut to fit ``max_bytes``: the value truncated, with ``dlq_truncated``,
    ``dlq_original_size`` and ``dlq_original_sha256`` saying so; the original headers dropped
    (``dlq_headers_dropped``) if they alone are too large."""
    def size(items: list[tuple[str, bytes]]) -> int:
        return sum(len(name) + len(data) for name, data in items)

    budget = max_bytes - RECORD_OVERHEAD_BYTES - len(key or b"")
    if size(headers) > budget // 2:
        dropped = [h for h in headers if not h[0].startswith("dlq_")]
        headers = [h for h in headers if h[0].startswith("dlq_")] + [
            ("dlq_headers_dropped", f"{len(dropped)} original header(s), {size(dropped)} bytes".encode())]
    room = budget - size(headers) - 200  # the truncation headers below
    if len(value) <= room:
        return value, headers
    return value[:max(0, room)], headers + [
        ("dlq_truncated", b"true"),
        ("dlq_original_size", str(len(value)).encode()),
        ("dlq_original_sha256", hashlib.sha256(value).hexdigest().encode()),
    ]


def root_cause(exc: BaseException) -> BaseException:
    """The error under Faust's wrappers (``ProducerSendError`` carries aiokafka's as its cause)."""
    while exc.__cause__ is not None and isinstance(exc, faust.exceptions.FaustError):
        exc = exc.__cause__
    return exc


def dead_letter_headers(original: Any, origin: Origin, error_class: str, reason: str) -> list[tuple[str, bytes]]:
    """The original headers exactly as they came (names, order, repeats, bytes), plus where the
    message came from and why it failed."""
    if original is None:
        kept: list[tuple[str, bytes]] = []
    else:
        items = original.items() if isinstance(original, Mapping) else original
        kept = [(str(name), bytes(value) if isinstance(value, bytes | bytearray) else
                 b"" if value is None else str(value).encode()) for name, value in items]
    return kept + [(name, value.encode()) for name, value in (
        ("dlq_original_topic", origin.topic),
        ("dlq_original_partition", str(origin.partition)),
        ("dlq_original_offset", str(origin.offset)),
        ("dlq_error_class", error_class),
        ("dlq_error_message", reason[:4000]),
        ("dlq_consumer", origin.consumer),
        ("dlq_failed_at", datetime.now(UTC).isoformat()),
    )]


def _where(stage: str, origin: Origin) -> dict[str, Any]:
    return {"stage": stage, "topic": origin.topic, "partition": origin.partition, "offset": origin.offset}


def _shot_fields(value: Any) -> dict[str, Any]:
    shot = getattr(value, "shot", None)
    return {"shot": shot.shot_number, "attempt": value.attempt} if shot is not None else {}


def _describe(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
    return f"{exc}{where}"


def _log_lost_side_event(delivery: asyncio.Future) -> None:
    if not delivery.cancelled() and delivery.exception() is not None:
        log.warning("a side event was not delivered: %s", delivery.exception())
