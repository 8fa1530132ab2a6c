"""Restart-to-first-message: how soon a worker that restarts handles messages again.

For a SIGKILLed (a crash) and a SIGTERMed (a deploy) planner, with dynamic group membership and
with static membership (``TOWER_WORKER_ID``): the time from starting the new process to the
first event it produces for a message sent at that moment. The yardstick, in the same run: a
cold start of the same worker on a new consumer group (imports, topic check, first join), which
no restart can beat. Run with ``make bench-resume``; the session timeout is the default (30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from bench.report import write_section
from eventlog.follow import produce, scene_envelope
from events.envelope import scene_of_key
from events.models import SceneRequested
from foundation.kafka import delete_topics, ensure_topics, partitions_of
from foundation.settings import Settings
from store.pool import create_database, drop_database
from tower.testing import StageProcesses


async def first_output(settings: Settings, consumer: AIOKafkaConsumer, scene_id: str, timeout_s: float) -> None:
    """Wait for the planner's first ``shot.planned`` of ``scene_id`` (the consumer is at the end)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for records in (await consumer.getmany(timeout_ms=100)).values():
            if any(scene_of_key(r.key) == scene_id for r in records):
                return
    raise TimeoutError(f"no shot.planned for {scene_id} within {timeout_s:.0f} s")


def request(scene_id: str) -> SceneRequested:
    return SceneRequested(scene_id=scene_id, session_id="bench", description="Kai walks at dawn")


async def measure(settings: Settings, env: dict[str, str], *, how: str, static: bool, timeout_s: float) -> tuple[float, float]:
    """(cold start, restart) seconds to the first produced event, on a fresh consumer group."""
    group = f"{env['TOWER_GROUP_PREFIX']}-{how}-{'static' if static else 'dynamic'}-{uuid.uuid4().hex[:4]}"
    case_env = {**env, "TOWER_GROUP_PREFIX": group}
    if static:
        case_env["TOWER_WORKER_ID"] = "bench-1"
    workers = StageProcesses(case_env)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = await partitions_of(consumer, settings.topic("shot.planned"))
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        first = f"cold-{group}"
        started = time.monotonic()
        workers.start("planner")
        await produce(settings, [scene_envelope(request(first))])
        await workers.watch(first_output(settings, consumer, first, timeout_s))
        cold = time.monotonic() - started
        if how == "SIGKILL":
            workers.kill("planner")
        else:
            workers.stop_all()
        again = f"restart-{group}"
        started = time.monotonic()
        workers.start("planner")
        await produce(settings, [scene_envelope(request(again))])
        await workers.watch(first_output(settings, consumer, again, timeout_s))
        return cold, time.monotonic() - started
    finally:
        workers.stop_all()
        await consumer.stop()


async def run(repeats: int, timeout_s: float) -> str:
    base = Settings()
    unique = uuid.uuid4().hex[:8]
    media = Path(tempfile.mkdtemp(prefix="tower-bench-resume-"))
    database_url = await create_database(base.database_url, f"tower_bench_{unique}")
    env = {**os.environ, "TOWER_TOPIC_PREFIX": f"resume{unique}.", "TOWER_GROUP_PREFIX": f"resume{unique}",
           "TOWER_DATABASE_URL": database_url, "TOWER_MEDIA_DIR": str(media),
           "TOWER_STATE_DIR": str(media / "state"), "TOWER_LOG_LEVEL": "WARNING"}
    settings = Settings(topic_prefix=f"resume{unique}.", group_prefix=f"resume{unique}", database_url=database_url)
    await ensure_topics(settings)
    results: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    try:
        for _ in range(repeats):
            for how in ("SIGKILL", "SIGTERM"):
                for static in (False, True):
                    print(f"bench: {how}, {'static' if static else 'dynamic'} membership", file=sys.stderr)
                    results.setdefault((how, static), []).append(
                        await measure(settings, env, how=how, static=static, timeout_s=timeout_s))
    finally:
        shutil.rmtree(media, ignore_errors=True)
        await drop_database(base.database_url, f"tower_bench_{unique}")
        await delete_topics(base.kafka_bootstrap, settings.topic_prefix)
    cold = statistics.median(c for runs in results.values() for c, _ in runs)
    rows = [
        f"| {how} | {'static (`TOWER_WORKER_ID`)' if static else 'dynamic'} | "
        f"{statistics.median(r for _, r in runs):.1f} | {max(r for _, r in runs):.1f} |"
        for (how, static), runs in results.items()
    ]
    return "\n".join([
        "## Restart to first message (`make bench-resume`)",
        "",
        f"Command: `make bench-resume` (`python -m bench.resume --repeats {repeats}`). Machine: {os.cpu_count()} "
        f"cores, {platform.python_implementation()} {platform.python_version()}, broker {base.kafka_bootstrap}. "
        f"Date: {time.strftime('%Y-%m-%d')}. Session timeout {base.session_timeout_s:.0f} s (the default).",
        "",
        "Seconds from starting a planner worker again to the first `shot.planned` it produces for a scene "
        "sent at that moment (process start, imports, topic check, group join, the work), median and worst "
        f"of {repeats}. Yardstick from the same runs: a **cold start** on a new group, **{cold:.1f} s** "
        "median, which no restart can beat.",
        "",
        "| stopped by | membership | restart to first message, s | worst, s |",
        "|---|---|---:|---:|",
        *rows,
        "",
        "Reading it: a SIGTERMed dynamic member leaves the group on the way out, so its successor joins an "
        "empty group at once. A SIGKILLed one cannot leave: with dynamic membership the coordinator waits "
        "for its session to expire before the new member gets the partitions. With static membership the "
        "restarted process claims the same `group.instance.id` and gets its partitions back at once, "
        "whatever killed it; the session timeout then only matters when a worker does not come back.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each case (default 3)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for a first message")
    args = parser.parse_args()
    section = asyncio.run(run(args.repeats, args.timeout))
    write_section("resume", section)
    print(section)


if __name__ == "__main__":
    main()
