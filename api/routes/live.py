"""Live progress: a scene's events as server-sent events, from the API process's one live tail
(:mod:`api.live_hub`), which reads Kafka once for every watcher.

Each SSE ``id`` is a cursor (the next offset of every partition that carried the scene), so a
client that reconnects with ``Last-Event-ID`` continues exactly after the last event it got, on
this API process or another. The stream ends with ``complete`` (every shot final, and every event
of the scene written by then sent), ``failed`` (an event of the scene was dead-lettered),
``overflow`` (the client read too slowly: reconnect with the cursor it carries) or ``error``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import StreamingResponse

from api.live_hub import Delivery, LiveHub, Watcher, decode_cursor, encode_cursor, sse_body, sse_frame
from api.problems import Problem, ServiceUnavailable
from api.routes.director import backends_of, settings_of
from api.security import require_read

router = APIRouter(prefix="/api/director", tags=["live"], dependencies=[Depends(require_read)])
HEARTBEAT_S = 15.0
# Producers' clocks differ: start reading a little before the scene was requested.
CLOCK_MARGIN_MS = 30_000


def hub_of(request: Request) -> LiveHub:
    return request.app.state.live_hub


@router.get(
    "/scenes/{scene_id}/events",
    summary="The scene's events as server-sent events, live from Kafka; resumable with Last-Event-ID",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 404: {"description": "Unknown scene"}},
)
async def scene_events(
    request: Request,
    scene_id: Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^\x00]+$")],
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=8192)] = None,
) -> StreamingResponse:
    settings, backends, hub = settings_of(request), backends_of(request), hub_of(request)

    async def requested_at() -> datetime | None:
        return await backends.query(
            lambda pool: pool.fetchval("SELECT requested_at FROM scenes WHERE scene_id = $1", scene_id))

    try:
        since_ms = await hub.locate(scene_id, requested_at, wait_s=settings.api_scene_wait_s,
                                    margin_ms=CLOCK_MARGIN_MS)
    except (ConnectionError, KafkaError, OSError, LookupError) as exc:
        raise ServiceUnavailable("Kafka", str(exc)) from exc
    if since_ms is None:
        raise Problem(404, f"no scene {scene_id!r} (a scene appears once the learner has projected its request)")
    try:
        snapshot, watcher = await hub.watch(scene_id, since_ms)
    except (ConnectionError, KafkaError, OSError, LookupError) as exc:
        raise ServiceUnavailable("Kafka", str(exc)) from exc
    return StreamingResponse(
        _stream(request, scene_id, snapshot, watcher, decode_cursor(last_event_id)), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(request: Request, scene_id: str, snapshot: list[Delivery], watcher: Watcher,
                  resume: dict[TopicPartition, int]) -> AsyncIterator[bytes]:
    """The watcher's stream. Whatever is ready is sent as one chunk (the snapshot, or everything
    queued since the last send): one socket write for many events is what lets a thousand late
    joiners catch up at once."""
    hub = hub_of(request)
    cursor = _Cursor(resume)
    try:
        chunk, ended = cursor.frames(snapshot)
        yield b"retry: 2000\n\n" + chunk
        while not ended:
            if watcher.overflowed and watcher.queue.empty():
                yield sse_frame(sse_body("overflow", {
                    "scene_id": scene_id, "reason": f"this client fell {hub.queue_size} events behind; "
                    "reconnect with Last-Event-ID to continue exactly where it stopped",
                    "last_event_id": cursor.text()}))
                return
            try:
                async with asyncio.timeout(HEARTBEAT_S):
                    ready = [await watcher.queue.get()]
            except TimeoutError:
                if await request.is_disconnected():
                    return
                yield b": keepalive\n\n"
                continue
            while not watcher.queue.empty():
                ready.append(watcher.queue.get_nowait())
            chunk, ended = cursor.frames(ready)
            if chunk:
                yield chunk
    finally:
        hub.leave(scene_id, watcher)


class _Cursor:
    """One watcher's position. Without a resumed cursor it is the channel's own (each delivery
    carries it, encoded once for all watchers); with one, the two are merged, partition by
    partition, so a cursor from another process's order never goes back."""

    def __init__(self, resume: dict[TopicPartition, int]) -> None:
        self.resume = resume
        self.merged = dict(resume)
        self.last: Delivery | None = None

    def frame(self, delivery: Delivery) -> bytes | None:
        """The frame of ``delivery`` for this watcher; ``None`` if its cursor says it has it."""
        record = delivery.record
        if record is None:
            return delivery.frame
        if record.offset < self.resume.get(record.partition, 0):
            return None
        self.last = delivery
        if not self.resume:
            return delivery.frame
        for tp, offset in delivery.positions.items():
            if offset > self.merged.get(tp, 0):
                self.merged[tp] = offset
        return sse_frame(delivery.body, encode_cursor(self.merged))

    def frames(self, deliveries: list[Delivery]) -> tuple[bytes, bool]:
        """The frames of ``deliveries`` for this watcher up to the stream's end, and whether it ended."""
        out = []
        for delivery in deliveries:
            if frame := self.frame(delivery):
                out.append(frame)
            if delivery.record is None:
                return b"".join(out), True
        return b"".join(out), False

    def text(self) -> str | None:
        if self.resume:
            return encode_cursor(self.merged)
        return self.last.cursor if self.last else None
