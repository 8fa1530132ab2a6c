"""Per-stage drain rate: how fast the planner, refiner, learner and retrier empty a topic filled at once, beside
a bare aiokafka consume -> produce forwarder process on the same broker in the same run.

Each stage runs as its own worker process (as in production) on a topic filled with N events;
after a warm-up event has gone through (the worker is up and has its partitions), the N events
are produced at once and the clock runs until the stage has handled them all (its outputs for
the planner, refiner and retrier, its projected rows for the learner). The yardsticks, bare aiokafka and
Faust forwarder processes (:mod:`bench.forwarder`, :mod:`bench.faust_forwarder`), are measured
the same way: each consumes N messages and, for each, produces one and awaits the broker's
acknowledgement before the next, the delivery guarantee the stages keep (an output is
acknowledged before its input is). Run with ``make bench-drain``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.parallel import Run
from bench.report import write_section
from director.planner import plan_scene
from director.refiner import refine
from eventlog.follow import produce, scene_envelope
from events.envelope import Envelope, new_event_id
from events.models import QualityScored, SceneRequested, ShotPlanned
from events.topics import EVENT_TYPES, QUALITY_SCORED, SHOT_PLANNED
from foundation.kafka import delete_topics, partitions_of
from foundation.settings import Settings

DESCRIPTION = "Kai runs through the city at night"


async def raw_rate(bootstrap: str, count: int) -> float:
    """Messages per second of consume -> produce (awaiting each ack) over a pre-filled topic."""
    prefix = f"bench-drain-{uuid.uuid4().hex[:6]}-"
    source, sink = f"{prefix}in", f"{prefix}out"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(source, 12, 1), NewTopic(sink, 12, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    payload = b"x" * 800  # about a scene.requested
    for i in range(count):
        await producer.send(source, payload, key=str(i).encode())
    await producer.flush()
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=f"bench-{source}",
                                auto_offset_reset="earliest", enable_auto_commit=True)
    await consumer.start()
    try:
        seen = 0
        started = time.perf_counter()
        while seen < count:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    await (await producer.send(sink, record.value, key=record.key))
                    seen += 1
        return count / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()
        await delete_topics(bootstrap, prefix)


HOPS = 60  # inputs sent one at a time for the unloaded round trip


async def round_trips(consumer: AIOKafkaConsumer, send: Callable[[int], Awaitable[object]], outputs: int,
                      count: int = HOPS, timeout_s: float = 60) -> list[float]:
    """Milliseconds from producing one input (until acknowledged) to its first output arriving,
    one input at a time (each waits for all ``outputs`` of the previous one)."""
    trips = []
    for i in range(count):
        started = time.perf_counter()
        await send(i)
        first, seen, deadline = None, 0, time.monotonic() + timeout_s
        while seen < outputs:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{seen} of {outputs} outputs of input {i} after {timeout_s:.0f} s")
            arrived = sum(len(r) for r in (await consumer.getmany(timeout_ms=100)).values())
            if arrived and first is None:
                first = time.perf_counter()
            seen += arrived
        trips.append((first - started) * 1000)
    return trips


@dataclass(frozen=True)
class Drained:
    """One contender's figures in one round."""

    rate: float  # inputs drained per second
    trip_ms: float  # median unloaded round trip
    cpu_ms: float  # CPU time of its process per input while draining


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


FORWARDERS = {"aiokafka": "bench.forwarder", "Faust": "bench.faust_forwarder"}


async def forwarder(bootstrap: str, partitions: int, count: int, module: str) -> Drained:
    """A yardstick stage, a bare forwarder process (:mod:`bench.forwarder`, :mod:`bench.faust_forwarder`)
    on topics with the stages' partition count, measured as :func:`stage_rate` measures a stage: its
    unloaded round trips, then the rate at which it drains ``count`` messages produced at once."""
    prefix = f"bench-fwd-{uuid.uuid4().hex[:6]}-"
    source, sink = f"{prefix}in", f"{prefix}out"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(source, partitions, 1), NewTopic(sink, partitions, 1)])
    await admin.close()
    process = subprocess.Popen([sys.executable, "-m", module, source, sink, bootstrap])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await producer.start()
    await consumer.start()
    try:
        parts = await partitions_of(consumer, sink)
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        payload = b"x" * 800

        async def send(i: int) -> object:
            return await producer.send_and_wait(source, payload, key=f"k{i}".encode())

        await round_trips(consumer, send, 1, count=1, timeout_s=120)  # the forwarder has joined its group
        trips = await round_trips(consumer, send, 1)
        cpu, started = cpu_seconds(process.pid), time.perf_counter()
        for i in range(count):
            await producer.send(source, payload, key=f"d{i}".encode())
        await count_outputs(consumer, count)
        elapsed = time.perf_counter() - started
        return Drained(count / elapsed, statistics.median(trips), (cpu_seconds(process.pid) - cpu) / count * 1000)
    finally:
        process.terminate()
        process.wait(timeout=30)
        await consumer.stop()
        await producer.stop()
        await delete_topics(bootstrap, prefix)


async def count_outputs(consumer: AIOKafkaConsumer, count: int, timeout_s: float = 600) -> None:
    seen, deadline = 0, time.monotonic() + timeout_s
    while seen < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{seen} of {count} outputs after {timeout_s:.0f} s")
        seen += sum(len(r) for r in (await consumer.getmany(timeout_ms=200)).values())


async def stage_rate(base: Settings, stage: str, count: int) -> Drained:
    """Inputs per second the stage drains (after a warm-up input and the round trips), the median
    unloaded round trip (:func:`round_trips`; the retrier's are retries of failed scores), and the
    worker's CPU time per input while draining."""
    async with Run(base, f"drain{stage[:3]}") as run:
        settings = run.settings
        plan = plan_scene(SceneRequested(scene_id="x", session_id="s", description=DESCRIPTION), fps=base.render_fps)
        shots = len(plan.shots)

        def scene(i: int) -> Envelope:
            return scene_envelope(SceneRequested(scene_id=f"d-{i}", session_id="bench", description=DESCRIPTION))

        def planned(i: int) -> Envelope:
            value = ShotPlanned(scene_id=f"d-{i}", session_id="bench", attempt=1, max_attempts=1, quality_threshold=0.1,
                                shot=plan.shots[i % shots], overall_mood=plan.overall_mood,
                                lighting_suggestions=plan.lighting_suggestions)
            return Envelope(id=new_event_id(), source="bench", type=SHOT_PLANNED.event_type, scene_id=value.scene_id,
                            session_id="bench", value=value)

        def scored(i: int) -> Envelope:
            refined = refine(planned(i).value, {}, width=64, height=64, workflow="w", learner_version="1")
            value = QualityScored(**refined.model_dump(), status="ok", composite=0.9, passed=True, scorer_version="t",
                                  device="cpu")
            return Envelope(id=new_event_id(), source="bench", type=QUALITY_SCORED.event_type, scene_id=value.scene_id,
                            session_id="bench", value=value)

        def failed(i: int) -> Envelope:  # a low score with attempts left: the retry controller sends a retry
            retry = planned(10_000 + i).value.model_copy(update={"max_attempts": 2, "quality_threshold": 0.5})
            refined = refine(retry, {}, width=64, height=64, workflow="w", learner_version="1")
            value = QualityScored(**refined.model_dump(), status="ok", composite=0.1, passed=False,
                                  scorer_version="t", device="cpu")
            return Envelope(id=new_event_id(), source="bench", type=QUALITY_SCORED.event_type, scene_id=value.scene_id,
                            session_id="bench", value=value)

        # What the stage drains, the topic of its outputs (None: the learner, which writes rows and
        # produces nothing), and the outputs per input; the learner's round trip is not measured.
        make, output, per_input = {"planner": (scene, "shot.planned", shots), "refiner": (planned, "prompt.refined", 1),
                                   "learner": (scored, None, 1), "retrier": (failed, "shot.planned", 1)}[stage]
        consumer = AIOKafkaConsumer(bootstrap_servers=base.kafka_bootstrap, enable_auto_commit=False)
        producer = AIOKafkaProducer(bootstrap_servers=base.kafka_bootstrap, acks="all", enable_idempotence=True)
        await consumer.start()
        await producer.start()
        try:
            if output is not None:
                parts = await partitions_of(consumer, settings.topic(output))
                consumer.assign(parts)
                await consumer.seek_to_end(*parts)
            run.workers.start(stage)
            await produce(settings, [make(-1)])
            await run.workers.watch(learned(run, 1) if output is None else count_outputs(consumer, per_input))

            async def send(i: int) -> object:
                envelope = make(20_000 + i)
                topic = settings.topic(EVENT_TYPES[type(envelope.value)].name)
                return await producer.send_and_wait(topic, envelope.encode_value(), key=envelope.key,
                                                    headers=envelope.headers())

            trips = [math.nan] if output is None else await run.workers.watch(round_trips(consumer, send, per_input))
            batch = [make(i) for i in range(count)]
            pid = run.workers.procs[stage].pid
            cpu, started = cpu_seconds(pid), time.perf_counter()  # the stage starts while the batch is produced
            await produce(settings, batch)
            await run.workers.watch(learned(run, count + 1) if output is None
                                    else count_outputs(consumer, count * per_input))
            elapsed = time.perf_counter() - started
            return Drained(count / elapsed, statistics.median(trips), (cpu_seconds(pid) - cpu) / count * 1000)
        finally:
            await consumer.stop()
            await producer.stop()


async def learned(run: Run, count: int, timeout_s: float = 600) -> None:
    """Wait until the learner has projected ``count`` events."""
    conn = await asyncpg.connect(run.database_url)
    try:
        deadline = time.monotonic() + timeout_s
        while await projected(conn) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the learner projected fewer than {count} events in {timeout_s:.0f} s")
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def projected(conn: asyncpg.Connection) -> int:
    try:
        return await conn.fetchval("SELECT count(*) FROM processed_events")
    except asyncpg.UndefinedTableError:  # the learner migrates its database on its first event
        return 0


async def run(count: int, repeats: int) -> str:
    base = Settings()
    raw: list[float] = []
    results: dict[str, list[Drained]] = {name: [] for name in (*FORWARDERS, *STAGES)}
    # Rounds, each measuring every contender once: the machine's drift and noise fall on all of them.
    for round_ in range(1, repeats + 1):
        print(f"bench: round {round_}/{repeats}: raw in-process consume -> produce x{count}", file=sys.stderr)
        raw.append(await raw_rate(base.kafka_bootstrap, count))
        for name, module in FORWARDERS.items():
            print(f"bench: round {round_}/{repeats}: bare {name} forwarder process, round trips x{HOPS}, then "
                  f"draining {count} messages", file=sys.stderr)
            results[name].append(await forwarder(base.kafka_bootstrap, base.topic_partitions, count, module))
        for stage in STAGES:
            print(f"bench: round {round_}/{repeats}: {stage} round trips x{HOPS}, then draining {count} events",
                  file=sys.stderr)
            results[stage].append(await stage_rate(base, stage, count))
    bare = results["aiokafka"]
    bare_rate, bare_trip = median(bare, "rate"), median(bare, "trip_ms")
    faust_trip = median(results["Faust"], "trip_ms")
    rows = []
    for name, runs in results.items():
        rate, trip = median(runs, "rate"), median(runs, "trip_ms")
        label = f"bare {name} forwarder" if name in FORWARDERS else name
        trips = ("– (produces nothing) | – | –" if math.isnan(trip) else
                 f"{trip:.2f} ({spread(runs, 'trip_ms', 2)}) | {trip / bare_trip:.1f}x | {trip / faust_trip:.1f}x")
        rows.append(f"| {label} | {rate:,.0f} ({spread(runs, 'rate')}) | {rate / bare_rate:.0%} | {trips} | "
                    f"{median(runs, 'cpu_ms'):.2f} ({spread(runs, 'cpu_ms', 2)}) |")
    return "\n".join([
        "## Per-stage drain rate (`make bench-drain`)",
        "",
        f"Command: `make bench-drain` (`python -m bench.drain --count {count} --repeats {repeats}`). Machine: "
        f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, broker "
        f"{base.kafka_bootstrap}, workers on {'uvloop' if base.uvloop else 'asyncio'}'s event loop (`TOWER_UVLOOP`). "
        f"Date: {time.strftime('%Y-%m-%d')}. Each contender is one process draining "
        f"{count} inputs produced at once (after a warm-up input and the round trips below), timed from the first "
        "of them being produced to the last being handled; the planner's input is a 4-shot scene, so it produces 4 "
        f"events per input. {repeats} rounds, each measuring every contender once; figures are the medians, "
        "(min-max) beside them: single runs on this shared machine vary by up to 2x.",
        "",
        f"Yardstick, same rounds, measured the same way: a bare aiokafka consumer-group forwarder process "
        f"(`bench/forwarder.py`) on {base.topic_partitions}-partition topics that, for each message, produces one "
        f"and awaits its acknowledgement (the delivery guarantee the stages keep): **{bare_rate:,.0f} messages/s**, "
        f"round trip **{bare_trip:.2f} ms**. Beside it, Faust's own floor: the same forwarder as a bare Faust agent "
        "run like a Tower worker (`bench/faust_forwarder.py`). For reference, a bare loop in the benchmark's own "
        f"process over an already-filled topic (no process boundary, no producer running beside it): "
        f"{statistics.median(raw):,.0f} messages/s ({spread_of(raw)}).",
        "",
        f"Unloaded round trip: before draining, {HOPS} inputs one at a time, from producing the input "
        "(acknowledged) to its first output arriving at a consumer (the retrier's: the retry of a failed score; the "
        "learner, which only writes rows, drains passing scores and has no round trip); the median of each round's "
        "p50. CPU: the process's user + system time per input while draining (the broker, PostgreSQL and the "
        "benchmark itself use the rest of the 2 cores).",
        "",
        "| contender | inputs/s | of the aiokafka forwarder's (goal 50%) | round trip p50 ms "
        "| of the aiokafka forwarder's | of the Faust forwarder's (retrier's goal 2x) | CPU ms per input |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
    ])


STAGES = ("planner", "refiner", "learner", "retrier")


def median(runs: list[Drained], field: str) -> float:
    return statistics.median(getattr(run, field) for run in runs)


def spread(runs: list[Drained], field: str, digits: int = 0) -> str:
    return spread_of([getattr(run, field) for run in runs], digits)


def spread_of(values: list[float], digits: int = 0) -> str:
    return f"{min(values):,.{digits}f}-{max(values):,.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000, help="events each stage drains per round (default 3000)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; the figures are their medians (default 5)")
    args = parser.parse_args()
    section = asyncio.run(run(args.count, args.repeats))
    write_section("drain", section)
    print(section)


if __name__ == "__main__":
    main()
