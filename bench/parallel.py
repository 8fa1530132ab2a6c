"""Shot-level parallelism: more workers, and more renders in flight per worker.

1. **The real pipeline** (procedural renderer, CPU scorer): a 4-shot scene's wall time and six
   scenes' shot throughput with one and with two renderer + scorer processes (the planner,
   refiner and learner once each). On this machine every process shares two cores with Kafka
   and PostgreSQL, so rendering and scoring, both CPU-bound, cannot go much faster by adding
   processes: the run shows by how much they do.
2. **The parallelism alone**, with the ``sleep`` fake render backend (named as such: it waits
   like a remote render server and does no CPU work): one renderer worker draining a topic of
   shots with 1 and with 4 renders in flight.

Run with ``make bench-parallel``; figures go to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from agents.registry import STAGE_NAMES
from bench.report import write_section
from director.planner import plan_scene
from director.refiner import refine
from eventlog.follow import follow_scene, produce, scene_envelope
from events.envelope import Envelope, new_event_id
from events.models import PromptRefined, SceneRequested, ShotPlanned
from events.topics import PROMPT_REFINED
from foundation.kafka import delete_topics, ensure_topics, partitions_of
from foundation.settings import Settings
from store.pool import create_database, drop_database
from tower.testing import StageProcesses

FOUR_SHOTS = "Kai runs through the city at night"


def request(scene_id: str, max_attempts: int = 1) -> SceneRequested:
    return SceneRequested(scene_id=scene_id, session_id="bench", description=FOUR_SHOTS, characters=["Kai"],
                          max_attempts=max_attempts)


class Run:
    """A fresh topic prefix, consumer groups, database and media store."""

    def __init__(self, base: Settings, label: str, **env: str) -> None:
        self.unique = f"{label}{uuid.uuid4().hex[:6]}"
        self.base = base
        self.media = Path(tempfile.mkdtemp(prefix="tower-bench-par-"))
        self.extra = env

    async def __aenter__(self) -> Run:
        self.database_url = await create_database(self.base.database_url, f"tower_bench_{self.unique}")
        self.env = {**os.environ, "TOWER_TOPIC_PREFIX": f"{self.unique}.", "TOWER_GROUP_PREFIX": self.unique,
                    "TOWER_DATABASE_URL": self.database_url, "TOWER_MEDIA_DIR": str(self.media),
                    "TOWER_STATE_DIR": str(self.media / "state"), "TOWER_LOG_LEVEL": "WARNING", **self.extra}
        self.settings = Settings(topic_prefix=f"{self.unique}.", group_prefix=self.unique,
                                 database_url=self.database_url, media_dir=self.media)
        await ensure_topics(self.settings)
        self.workers = StageProcesses(self.env)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.workers.stop_all()
        shutil.rmtree(self.media, ignore_errors=True)
        await drop_database(self.base.database_url, f"tower_bench_{self.unique}")
        await delete_topics(self.base.kafka_bootstrap, self.settings.topic_prefix)

    async def scenes(self, ids: list[str]) -> float:
        started = time.perf_counter()
        await produce(self.settings, [scene_envelope(request(sid)) for sid in ids])
        await self.workers.watch(asyncio.gather(*(follow_scene(self.settings, sid, timeout_s=900) for sid in ids)))
        return time.perf_counter() - started


async def stable(bootstrap: str, groups: dict[str, int], timeout_s: float = 120) -> None:
    """Wait until each group is Stable with its expected number of members (no rebalance to come)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            described = [g for name in groups for response in await admin.describe_consumer_groups([name])
                         for g in response.groups]
            if all(g[2] == "Stable" and len(g[5]) == groups[g[1]] for g in described):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"consumer groups not stable: {[(g[1], g[2], len(g[5])) for g in described]}")
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


async def pipeline(base: Settings, copies: int, scenes: int) -> dict[str, float]:
    async with Run(base, f"par{copies}x") as run:
        extra = [f"{stage}:{i}" for i in range(2, copies + 1) for stage in ("renderer", "scorer")]
        run.workers.start(*STAGE_NAMES, *extra)
        await run.scenes([f"warm-{run.unique}"])  # start-up and group joins are not counted
        await run.workers.watch(stable(base.kafka_bootstrap, {
            run.settings.app_id(stage): copies if stage in ("renderer", "scorer") else 1 for stage in STAGE_NAMES}))
        one = await run.scenes([f"one-{run.unique}"])
        many = await run.scenes([f"many-{run.unique}-{i}" for i in range(scenes)])
        run.workers.assert_alive()
    shots = len(plan_scene(request("count"), fps=base.render_fps).shots)
    return {"one_scene_s": one, "scenes_s": many, "shots_per_s": scenes * shots / many, "shots": shots}


def refined_shots(count: int, fps: int) -> list[Envelope[PromptRefined]]:
    """``count`` first attempts, each its own shot (its own key), ready for the renderer."""
    out = []
    while len(out) < count:
        scene = f"fake-{len(out)}-{uuid.uuid4().hex[:6]}"
        req = request(scene)
        for spec in plan_scene(req, fps=fps).shots:
            planned = ShotPlanned(scene_id=scene, session_id="bench", attempt=1, max_attempts=1, quality_threshold=0.5,
                                  shot=spec, overall_mood=spec.mood, lighting_suggestions=spec.lighting)
            value = refine(planned, {}, width=64, height=64, workflow="sleep-fake-v1", learner_version="1")
            out.append(Envelope(id=new_event_id(), source="bench", type=PROMPT_REFINED.event_type,
                                scene_id=scene, session_id="bench", value=value))
    return out[:count]


async def drain(base: Settings, in_flight: int, shots: int, render_s: float) -> float:
    """Seconds one renderer worker takes to render ``shots`` queued shots with the sleep fake."""
    async with Run(base, f"sleep{in_flight}x", TOWER_RENDER_BACKEND="sleep", TOWER_SLEEP_RENDER_S=str(render_s),
                   TOWER_RENDER_IN_FLIGHT=str(in_flight)) as run:
        consumer = AIOKafkaConsumer(bootstrap_servers=base.kafka_bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = await partitions_of(consumer, run.settings.topic("frame.rendered"))
            consumer.assign(parts)
            await consumer.seek_to_end(*parts)
            run.workers.start("renderer")
            await produce(run.settings, refined_shots(1, base.render_fps))  # warm-up: joined and rendering
            await run.workers.watch(outputs(consumer, 1))
            batch = refined_shots(shots, base.render_fps)
            started = time.perf_counter()
            await produce(run.settings, batch)
            await run.workers.watch(outputs(consumer, shots))
            return time.perf_counter() - started
        finally:
            await consumer.stop()


async def outputs(consumer: AIOKafkaConsumer, count: int, timeout_s: float = 600) -> None:
    seen = 0
    deadline = time.monotonic() + timeout_s
    while seen < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{seen} of {count} frame.rendered events after {timeout_s:.0f} s")
        seen += sum(len(r) for r in (await consumer.getmany(timeout_ms=200)).values())


async def run(scenes: int, shots: int, render_s: float) -> str:
    base = Settings()
    print("bench: sleep fake backend, 1 render in flight", file=sys.stderr)
    serial = await drain(base, 1, shots, render_s)
    print("bench: sleep fake backend, 4 renders in flight", file=sys.stderr)
    parallel = await drain(base, 4, shots, render_s)
    results = {}
    for copies in (1, 2):
        print(f"bench: real pipeline, {copies} renderer + scorer process(es)", file=sys.stderr)
        results[copies] = await pipeline(base, copies, scenes)
    one, two = results[1], results[2]
    speedup = two["shots_per_s"] / one["shots_per_s"]
    return "\n".join([
        "## Shot-level parallelism (`make bench-parallel`)",
        "",
        f"Command: `make bench-parallel` (`python -m bench.parallel --scenes {scenes} --shots {shots}`). Machine: "
        f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, broker "
        f"{base.kafka_bootstrap}, {base.render_width}x{base.render_height} frames at {base.render_fps} fps, "
        f"{base.topic_partitions} partitions per topic. Date: {time.strftime('%Y-%m-%d')}. Shot-level events are "
        "keyed by `scene_id/shot_number`, so a scene's shots spread over the partitions.",
        "",
        f"**The real pipeline** (procedural renderer, CPU scorer; one attempt per shot, so retries do not blur "
        f"it; {one['shots']:.0f}-shot scene \"{FOUR_SHOTS}\"):",
        "",
        "| renderer + scorer processes | one scene, s | six scenes, s | shots/s |",
        "|---:|---:|---:|---:|",
        f"| 1 | {one['one_scene_s']:.1f} | {one['scenes_s']:.1f} | {one['shots_per_s']:.2f} |",
        f"| 2 | {two['one_scene_s']:.1f} | {two['scenes_s']:.1f} | {two['shots_per_s']:.2f} |",
        "",
        f"Two workers each: **{speedup:.2f}x** one worker's shot throughput (goal 1.6x). "
        + ("Met." if speedup >= 1.6 else
           "Not met, and not by the pipeline: on 2 cores the procedural renderer and the CPU scorer are "
           "CPU-bound and already share both cores with Kafka, PostgreSQL and the other stages, so a second "
           "process of each mostly splits the same CPU time. The fake-backend run below measures the "
           "parallelism without that limit."),
        "",
        f"**The parallelism alone** (`sleep` fake render backend, {render_s:.1f} s per render, one renderer "
        f"worker draining {shots} queued shots of different scenes):",
        "",
        "| renders in flight | drain time, s | shots/s |",
        "|---:|---:|---:|",
        f"| 1 | {serial:.1f} | {shots / serial:.2f} |",
        f"| 4 | {parallel:.1f} | {shots / parallel:.2f} |",
        "",
        f"4 in flight: **{serial / parallel:.2f}x** (goal 3.5x). Offsets are committed only past completed "
        "renders, in offset order per partition (`agents/window.py`), and a shot's attempts still render one "
        "after another (they share a key).",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=6, help="scenes submitted together (default 6)")
    parser.add_argument("--shots", type=int, default=24, help="queued shots the fake-backend runs drain (default 24)")
    parser.add_argument("--render-s", type=float, default=1.0, help="seconds per fake render (default 1)")
    args = parser.parse_args()
    section = asyncio.run(run(args.scenes, args.shots, args.render_s))
    write_section("parallel", section)
    print(section)


if __name__ == "__main__":
    main()
