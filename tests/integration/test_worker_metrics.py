"""Each worker process serves its Prometheus metrics on TOWER_METRICS_PORT (0: any free port, logged)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import httpx
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from eventlog.follow import scene_envelope
from tests.integration.test_pipeline import kai_request
from tower.testing import StageProcesses, free_port

Samples = dict[tuple[str, frozenset], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scrape_until(workers: StageProcesses, port: int, done: Callable[[Samples], bool], what: str,
                       timeout_s: float = 25.0) -> Samples:
    """Scrape ``/metrics`` until ``done(samples)``; on timeout fail with what was last seen."""
    url = f"http://127.0.0.1:{port}/metrics"
    last = "nothing yet"
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            workers.assert_alive()
            try:
                response = await client.get(url)
                samples = parse(response.text)
                if done(samples):
                    return samples
                last = "\n".join(line for line in response.text.splitlines() if line.startswith("tower_"))
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} on {url}; last seen:\n{last}\n{workers.tail()}")


async def logged_metrics_port(workers: StageProcesses, log_name: str, timeout_s: float = 20.0) -> int:
    """The port a worker started with TOWER_METRICS_PORT=0 says it serves its metrics on."""
    path = workers.log_dir / log_name
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        workers.assert_alive()
        found = re.search(r"metrics on http://\S+:(\d+)/metrics", path.read_text() if path.exists() else "")
        if found:
            return int(found.group(1))
        await asyncio.sleep(0.1)
    raise AssertionError(f"{log_name} never logged its metrics address\n{workers.tail()}")


async def test_workers_count_handled_and_dead_lettered_messages_and_their_lag(settings, workers, tower_env):
    planner_port = free_port()
    workers.env = {**tower_env, "TOWER_METRICS_PORT": str(planner_port)}
    workers.start("planner")
    workers.env = {**tower_env, "TOWER_METRICS_PORT": "0"}  # the learner's own process: any free port
    workers.start("learner")

    topic = settings.topic("scene.requested")
    scene = scene_envelope(kai_request("scene-metrics"))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        good = await producer.send_and_wait(topic, scene.encode_value(), key=scene.key, headers=scene.headers())
        bad = await producer.send_and_wait(topic, b"{this is not json", key=b"bad-scene")
    finally:
        await producer.stop()

    for stage, port in (("planner", planner_port), ("learner", await logged_metrics_port(workers, "learner.1.log"))):
        group = settings.app_id(stage)

        def both_handled(samples: Samples, stage: str = stage) -> bool:
            return (value(samples, "tower_events_handled_total", stage=stage, topic=topic) or 0) >= 1 and (
                value(samples, "tower_events_dead_lettered_total", stage=stage, topic=topic,
                      error_class="ValidationError") or 0) >= 1

        samples = await scrape_until(workers, port, both_handled, f"{stage}: the scene handled, the bad message "
                                     f"dead-lettered (tower_events_*_total{{stage={stage!r},topic={topic!r}}})")
        assert value(samples, "tower_events_handled_total", stage=stage, topic=topic) == 1
        assert value(samples, "tower_events_dead_lettered_total", stage=stage, topic=topic,
                     error_class="ValidationError") == 1
        assert value(samples, "tower_handler_seconds_count", stage=stage, topic=topic) == 1
        assert value(samples, "tower_handler_seconds_sum", stage=stage, topic=topic) > 0
        for record in (good, bad):  # caught up on both partitions (possibly the same one)
            assert value(samples, "tower_consumer_lag", group=group, topic=topic,
                         partition=str(record.partition)) == 0, (stage, record)
        assert value(samples, "tower_events_failed_total", stage=stage, topic=topic, kind="error") is None
    # Each process serves its own stages only.
    assert value(samples, "tower_events_handled_total", stage="planner", topic=topic) is None
