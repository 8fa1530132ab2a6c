"""Live progress: a scene's events as server-sent events, read from Kafka as they arrive.

Each SSE ``id`` is a cursor (the next offset of every partition that carried the scene), so a
client that reconnects with ``Last-Event-ID`` continues exactly after the last event it got:
the stream re-reads the scene from its start to know its state, and sends only what is past the
cursor. The stream ends with ``complete`` (every shot final, and every event of the scene
written by then sent) or ``failed`` (an event of the scene was dead-lettered).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated

from aiokafka import TopicPartition
from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import StreamingResponse

from api.problems import Problem
from api.routes.director import backends_of, settings_of
from api.security import require_read
from tower.follow import SceneProgress, SceneRecord, Tick, tail_scene

router = APIRouter(prefix="/api/director", tags=["live"], dependencies=[Depends(require_read)])
HEARTBEAT_S = 15.0
# Producers' clocks differ: start reading a little before the scene was requested.
CLOCK_MARGIN_MS = 30_000
CURSOR_VERSION = "c1"


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


def sse(event: str, data: dict, event_id: str | None = None) -> bytes:
    lines = [f"id: {event_id}"] if event_id else []
    lines += [f"event: {event}", f"data: {json.dumps(data, default=str, separators=(',', ':'))}"]
    return ("\n".join(lines) + "\n\n").encode()


def describe_record(record: SceneRecord) -> dict:
    h = record.headers
    body = {"topic": record.topic, "id": h.get("ce_id"), "type": h.get("ce_type"), "time": h.get("ce_time"),
            "source": h.get("ce_source"), "causation_id": h.get("ce_causationid")}
    if record.dead_letter:
        body.update({k: v for k, v in h.items() if k.startswith("dlq_")})
    elif record.value is not None:
        body["data"] = record.value.model_dump(mode="json")
    return body


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
    settings, backends = settings_of(request), backends_of(request)
    requested_at = await _requested_at(backends, scene_id, settings.api_scene_wait_s)
    if requested_at is None:
        raise Problem(404, f"no scene {scene_id!r} (a scene appears once the learner has projected its request)")
    since_ms = int(requested_at.timestamp() * 1000) - CLOCK_MARGIN_MS
    resume = decode_cursor(last_event_id)
    return StreamingResponse(
        _stream(request, scene_id, since_ms, resume), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _requested_at(backends, scene_id: str, wait_s: float):  # noqa: ANN001, ANN202
    """When the scene was requested; waits briefly for a scene submitted a moment ago."""
    deadline = time.monotonic() + wait_s
    while True:
        found = await backends.query(
            lambda pool: pool.fetchval("SELECT requested_at FROM scenes WHERE scene_id = $1", scene_id)
        )
        if found is not None or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(0.1)


async def _stream(request: Request, scene_id: str, since_ms: int, resume: dict[TopicPartition, int]) -> AsyncIterator[bytes]:
    settings = settings_of(request)
    progress = SceneProgress(scene_id)
    positions = dict(resume)
    quiet_since = time.monotonic()
    yield b"retry: 2000\n\n"
    async with aclosing(tail_scene(settings, scene_id, since_ms=since_ms)) as records:
        async for record in records:
            if isinstance(record, Tick):
                if progress.done and record.caught_up:
                    # Partitions are read in any interleaving: the last score may come before
                    # other topics' events of the scene, so finish only once all are read.
                    finals = {n: {"attempt": v.attempt, "composite": v.composite, "passed": v.passed}
                              for n, v in sorted(progress.finals.items())}
                    yield sse("complete", {"scene_id": scene_id, "shot_count": progress.shot_count, "finals": finals})
                    return
                if time.monotonic() - quiet_since > HEARTBEAT_S:
                    quiet_since = time.monotonic()
                    yield b": keepalive\n\n"
                if await request.is_disconnected():
                    return
                continue
            if record.value is not None:
                progress.observe(record.topic, record.value)
            already_sent = record.offset < resume.get(record.partition, 0)
            if not already_sent:
                positions[record.partition] = record.offset + 1
                quiet_since = time.monotonic()
                yield sse("dead_letter" if record.dead_letter else record.topic, describe_record(record),
                          encode_cursor(positions))
            if record.dead_letter:
                yield sse("failed", {"scene_id": scene_id, "reason": record.headers.get("dlq_error_message"),
                                     "error_class": record.headers.get("dlq_error_class"),
                                     "topic": record.headers.get("dlq_original_topic")})
                return
