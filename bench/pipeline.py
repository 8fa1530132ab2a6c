"""End-to-end benchmark: scenes per minute through the five workers, per-stage hop latency, and
the raw aiokafka produce->consume hop on the same broker as the yardstick.

Run with ``make bench`` (starts Kafka and PostgreSQL when they are not up). A hop is the time
from a message's append (its Kafka CreateTime) to the append of the event it caused, so it
includes the consumer fetch, the handler and the produce; the yardstick hop is a bare
produce -> consume of one small message with nothing in between.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.registry import STAGE_NAMES
from bench.report import percentile, write_section
from events.envelope import header_map
from events.models import SceneRequested
from events.topics import TOPICS
from tower.follow import follow_scene, produce, scene_envelope
from tower.kafka import ensure_topics
from tower.settings import Settings
from tower.worker import StageProcesses

HOPS = {  # child topic -> (stage, parent topic)
    "shot.planned": ("planner", "scene.requested"),
    "prompt.refined": ("refiner", "shot.planned"),
    "frame.rendered": ("renderer", "prompt.refined"),
    "quality.scored": ("scorer", "frame.rendered"),
}


async def raw_hops(bootstrap: str, count: int) -> list[float]:
    """Milliseconds from send to receipt for ``count`` messages sent one after another."""
    topic = f"bench-raw-{uuid.uuid4().hex[:8]}"
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await producer.start()
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        while not consumer.partitions_for_topic(topic):
            await consumer._client.force_metadata_update()  # noqa: SLF001
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        latencies = []
        for i in range(count + 20):
            started = time.perf_counter()
            await producer.send(topic, str(i).encode())
            while True:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                if batch.get(tp):
                    break
            if i >= 20:  # warm-up
                latencies.append((time.perf_counter() - started) * 1000)
        return latencies
    finally:
        await consumer.stop()
        await producer.stop()


async def stage_hops(settings: Settings, scene_ids: set[str]) -> dict[str, list[float]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    appended: dict[str, tuple[str, int]] = {}  # event id -> (topic, CreateTime ms)
    children: list[tuple[str, str, int]] = []  # (topic, causation id, CreateTime ms)
    try:
        for spec in TOPICS:
            name = settings.topic(spec.name)
            parts = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name) or []]
            if not parts:
                await consumer._client.force_metadata_update()  # noqa: SLF001
                parts = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            ends = await consumer.end_offsets(parts)
            while any([await consumer.position(tp) < ends[tp] for tp in parts]):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        if r.key and r.key.decode() in scene_ids:
                            headers = header_map(r.headers)
                            appended[headers["ce_id"]] = (spec.name, r.timestamp)
                            if headers.get("ce_causationid"):
                                children.append((spec.name, headers["ce_causationid"], r.timestamp))
    finally:
        await consumer.stop()
    hops: dict[str, list[float]] = {stage: [] for stage, _ in HOPS.values()}
    hops["learner (retry)"] = []
    for topic, parent_id, ts in children:
        parent_topic, parent_ts = appended.get(parent_id, (None, 0))
        if topic == "shot.planned" and parent_topic == "quality.scored":
            hops["learner (retry)"].append(ts - parent_ts)
        elif topic in HOPS and parent_topic == HOPS[topic][1]:
            hops[HOPS[topic][0]].append(ts - parent_ts)
    return hops


async def run(scenes: int, raw_count: int) -> str:
    base = Settings()
    unique = uuid.uuid4().hex[:8]
    media = Path(tempfile.mkdtemp(prefix="tower-bench-"))
    env = {**os.environ, "TOWER_TOPIC_PREFIX": f"bench{unique}.", "TOWER_GROUP_PREFIX": f"bench{unique}",
           "TOWER_MEDIA_DIR": str(media), "TOWER_LOG_LEVEL": "WARNING"}
    settings = Settings(topic_prefix=f"bench{unique}.", group_prefix=f"bench{unique}", media_dir=media)
    await ensure_topics(settings)
    print(f"bench: raw aiokafka hop x{raw_count} on {base.kafka_bootstrap}", file=sys.stderr)
    raw = await raw_hops(base.kafka_bootstrap, raw_count)

    workers = StageProcesses(env)
    workers.start(*STAGE_NAMES)
    try:
        # One warm-up scene so start-up (imports, group joins) is not counted.
        await produce(settings, [scene_envelope(SceneRequested(scene_id=f"warm-{unique}", session_id="bench",
                                                               description="Kai walks at dawn"))])
        await follow_scene(settings, f"warm-{unique}", timeout_s=300)
        ids = [f"bench-{unique}-{i}" for i in range(scenes)]
        requests = [
            SceneRequested(scene_id=sid, session_id="bench", description="Create a scene where Kai fights the dragon",
                           characters=["Kai", "Dragon"])
            for sid in ids
        ]
        print(f"bench: {scenes} scenes end to end", file=sys.stderr)
        started = time.perf_counter()
        await produce(settings, [scene_envelope(r) for r in requests])
        await asyncio.gather(*(follow_scene(settings, sid, timeout_s=900) for sid in ids))
        elapsed = time.perf_counter() - started
        workers.assert_alive()
    finally:
        workers.stop_all()
    hops = await stage_hops(settings, set(ids))

    raw_p50, raw_p95 = percentile(raw, 50), percentile(raw, 95)
    rows = []
    for stage, values in hops.items():
        if values:
            p50, p95 = percentile(values, 50), percentile(values, 95)
            rows.append(f"| {stage} | {len(values)} | {p50:.1f} | {p95:.1f} | {p50 / raw_p50:.1f}x |")
    return "\n".join([
        "## End to end (`make bench`)",
        "",
        f"Command: `make bench` (`python -m bench.pipeline --scenes {scenes}`). Machine: {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, broker {base.kafka_bootstrap}, "
        f"renderer {settings.render_backend} {settings.render_width}x{settings.render_height}, "
        f"scorer device {settings.scorer_device}. Date: {time.strftime('%Y-%m-%d')}.",
        "",
        f"- **Throughput:** {scenes} scenes ({scenes * 4} shots) in {elapsed:.1f} s = "
        f"**{scenes / elapsed * 60:.1f} scenes/min** (all five stages as separate worker processes on one machine).",
        f"- **Yardstick, raw aiokafka produce->consume hop** (acks=all, one message at a time, x{len(raw)}): "
        f"p50 **{raw_p50:.2f} ms**, p95 {raw_p95:.2f} ms, mean {statistics.fmean(raw):.2f} ms.",
        "",
        "Per-stage hop (parent appended -> child appended, Kafka CreateTime, ms; includes the stage's work):",
        "",
        "| stage | hops | p50 ms | p95 ms | p50 / raw hop p50 |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        "The raw hop is the floor any stage pays to cross the broker; the ratio is what the stage's "
        "decode, domain work (rendering and scoring dominate), Postgres reads and produce add on top. "
        "Scenes are submitted together, so hops also include time queued behind other scenes' shots.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=6, help="scenes to push through (default 6)")
    parser.add_argument("--raw", type=int, default=300, help="raw produce->consume hops to time (default 300)")
    args = parser.parse_args()
    section = asyncio.run(run(args.scenes, args.raw))
    write_section("pipeline", section)
    print(section)


if __name__ == "__main__":
    main()
