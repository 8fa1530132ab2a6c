"""The live stream under load, through the real stack: `tower api`, the seven agents, Kafka and
PostgreSQL. The API keeps one Kafka tail for all its watchers (api/live_hub.py)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import httpx

from agents.registry import STAGE_NAMES
from eventlog.follow import end_offsets, scene_history
from events.topics import PIPELINE
from foundation.settings import Settings
from tests.integration.test_api import KAI
from tower.testing import start_api

WATCHERS = 300
STREAM_TIMEOUT_S = 240


@dataclass
class Watch:
    """What one client received, over one or two connections."""

    reconnect_after: int | None
    ids: list[str] = field(default_factory=list)
    ends: list[str] = field(default_factory=list)
    reconnected_at: float | None = None
    completed_at: float | None = None


async def _read(client: httpx.AsyncClient, path: str, watch: Watch, *, last_event_id: str | None,
                stop_after: int | None) -> str | None:
    """Read the stream into ``watch``; return the last SSE id if it stopped after ``stop_after``
    events (a client going away mid-scene), ``None`` once the server ended the stream."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    last_id = last_event_id
    got = 0
    async with client.stream("GET", path, headers=headers, timeout=None) as response:
        assert response.status_code == 200, await response.aread()
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line:
                if not line.startswith(":"):
                    name, _, value = line.partition(": ")
                    fields[name] = value
                continue
            if "event" not in fields:
                fields = {}
                continue
            data = json.loads(fields["data"])
            if "id" in fields:
                watch.ids.append(data["id"])
                last_id = fields["id"]
                got += 1
            else:
                watch.ends.append(fields["event"])
                watch.completed_at = time.monotonic()
                return None
            fields = {}
            if stop_after is not None and got >= stop_after:
                return last_id
    raise AssertionError(f"{path}: the server closed the stream without an ending event after {got} events")


async def _watch(client: httpx.AsyncClient, path: str, watch: Watch) -> None:
    cursor = await _read(client, path, watch, last_event_id=None, stop_after=watch.reconnect_after)
    if cursor is not None:
        watch.reconnected_at = time.monotonic()
        await _read(client, path, watch, last_event_id=cursor, stop_after=None)


async def test_300_watchers_half_reconnecting_mid_scene_each_get_every_event_exactly_once(
    tower_env, settings: Settings, workers, tmp_path
) -> None:
    # Renders that take a while, one at a time, so the scene is still running when clients reconnect.
    env = {**tower_env, "TOWER_RENDER_BACKEND": "sleep", "TOWER_SLEEP_RENDER_S": "1.5", "TOWER_RENDER_IN_FLIGHT": "1"}
    workers.env = env
    workers.start(*STAGE_NAMES)
    api = start_api(env, tmp_path / "api.log")
    try:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(base_url=api.url, limits=limits, timeout=30) as client:
            started = await client.post("/api/director/workflow/integrate", json=KAI,
                                        headers={"Authorization": f"Bearer {api.token}"})
            assert started.status_code == 202, started.text
            scene_id = started.json()["scene_id"]
            path = started.json()["links"]["events"]
            # Half of the clients go away after 2-11 events and come back with their Last-Event-ID.
            watches = [Watch(reconnect_after=2 + i % 10 if i % 2 else None) for i in range(WATCHERS)]
            try:
                await asyncio.wait_for(asyncio.gather(*(_watch(client, path, w) for w in watches)), STREAM_TIMEOUT_S)
            except TimeoutError:
                unfinished = sum(1 for w in watches if not w.ends)
                raise AssertionError(f"{unfinished} of {WATCHERS} streams not ended after {STREAM_TIMEOUT_S} s; "
                                     f"API log:\n{api.log()}") from None
    finally:
        api.stop()

    assert all(w.ends == ["complete"] for w in watches), {tuple(w.ends) for w in watches}
    for watch in watches:
        assert len(watch.ids) == len(set(watch.ids)), "an event was delivered twice to one client"
    reference = set(watches[0].ids)
    missing = [(i, len(reference - set(w.ids))) for i, w in enumerate(watches) if set(w.ids) != reference]
    assert not missing, f"clients whose events differ from the others' (index, events missing): {missing[:10]}"

    # Every streamed event is the scene's, as Kafka has it, and every pipeline topic is there.
    history = await scene_history(settings, scene_id, since_ms=0, until=await end_offsets(settings))
    in_kafka = {record.headers.get("ce_id") for record in history}
    assert reference <= in_kafka, reference - in_kafka
    assert {spec.name for spec in PIPELINE} <= {record.topic for record in history if record.headers["ce_id"] in reference}

    reconnected = [w for w in watches if w.reconnect_after is not None]
    assert all(w.reconnected_at is not None for w in reconnected)
    first_complete = min(w.completed_at for w in watches)
    mid_scene = sum(1 for w in reconnected if w.reconnected_at < first_complete)
    assert mid_scene >= len(reconnected) // 2, (
        f"only {mid_scene} of {len(reconnected)} clients reconnected before the scene completed: the test did not "
        "exercise reconnecting mid-scene")
