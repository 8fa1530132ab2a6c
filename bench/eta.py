"""How good the scene ETA is: predicted against actual scene time, after ten finished scenes.

``make bench`` runs it: the seven stages as worker processes (the default procedural renderer) on
a database and topics of its own; ``--history`` scenes of several lengths, one at a time, make
the history; then each of ``--scenes`` more (10) is predicted (``director.eta.estimate`` over
``store.eta.scene_timings``: what ``scene/plan`` and ``tower submit`` report) before it is
submitted, and compared with its actual time (request to the last shot's final score, as
projected). The goal is within 25%.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from agents.registry import STAGE_NAMES
from bench.report import write_section
from director.eta import estimate
from director.planner import plan_scene
from eventlog.follow import follow_scene, produce, scene_envelope
from events.models import SceneRequested
from foundation.kafka import delete_topics, ensure_topics
from foundation.settings import Settings
from render.backends import workflow_name
from store.eta import scene_timings
from store.pool import create_database, drop_database
from tower.testing import StageProcesses

DESCRIPTIONS = ("Create a scene where Kai fights the dragon", "Mira and Kai talk on the rooftop at dawn",
                "A chase through the night market", "Kai walks home in the rain")
DURATIONS = (4.0, 6.0, 8.0, 10.0, 12.0)


def request(index: int, unique: str) -> SceneRequested:
    return SceneRequested(scene_id=f"eta-{unique}-{index}", session_id="bench-eta", characters=["Kai", "Mira"],
                          description=DESCRIPTIONS[index % len(DESCRIPTIONS)],
                          target_duration_s=DURATIONS[(index * 3) % len(DURATIONS)])


async def timings_once(database_url: str, workflow: str, count: int, timeout_s: float = 120) -> list:
    """The history once the learner has projected ``count`` finished scenes."""
    deadline = time.monotonic() + timeout_s
    conn = await asyncpg.connect(database_url)
    try:
        while len(found := await scene_timings(conn, workflow)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)} finished scenes projected after {timeout_s} s, expected {count}")
            await asyncio.sleep(0.2)
        return found
    finally:
        await conn.close()


async def run(history: int, scenes: int) -> str:
    base = Settings()
    unique = uuid.uuid4().hex[:8]
    media = Path(tempfile.mkdtemp(prefix="tower-bench-eta-"))
    database_url = await create_database(base.database_url, f"tower_bench_eta_{unique}")
    env = {**os.environ, "TOWER_TOPIC_PREFIX": f"eta{unique}.", "TOWER_GROUP_PREFIX": f"eta{unique}",
           "TOWER_DATABASE_URL": database_url, "TOWER_MEDIA_DIR": str(media), "TOWER_STATE_DIR": str(media / "state"),
           "TOWER_LOG_LEVEL": "WARNING"}
    settings = Settings(topic_prefix=f"eta{unique}.", group_prefix=f"eta{unique}", media_dir=media,
                        database_url=database_url)
    workflow = workflow_name(settings)
    await ensure_topics(settings)
    workers = StageProcesses(env)
    workers.start(*STAGE_NAMES)
    rows = []
    try:
        warm = SceneRequested(scene_id=f"warm-{unique}", session_id="bench-eta", description="Kai walks at dawn")
        await produce(settings, [scene_envelope(warm)])
        await workers.watch(follow_scene(settings, warm.scene_id, timeout_s=300))
        await timings_once(database_url, workflow, 1)
        # The workers' start-up (imports, group joins) is not a scene's time: the warm-up leaves the history.
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("DELETE FROM scenes WHERE scene_id = $1", warm.scene_id)
        finally:
            await conn.close()
        for index in range(history + scenes):
            scene = request(index, unique)
            frames = sum(shot.frame_count for shot in plan_scene(scene, fps=settings.render_fps).shots)
            predicted = None
            if index >= history:
                conn = await asyncpg.connect(database_url)
                try:
                    predicted = estimate(await scene_timings(conn, workflow), frames)
                finally:
                    await conn.close()
            print(f"bench-eta: scene {index + 1}/{history + scenes} ({frames} frames)", file=sys.stderr)
            await produce(settings, [scene_envelope(scene)])
            await workers.watch(follow_scene(settings, scene.scene_id, timeout_s=300))
            actual = (await timings_once(database_url, workflow, index + 1))[0]  # newest first
            if predicted is not None:
                conn = await asyncpg.connect(database_url)
                try:
                    attempts = await conn.fetchval("SELECT count(*) FROM scores WHERE scene_id = $1", scene.scene_id)
                    shots = await conn.fetchval("SELECT count(*) FROM shots WHERE scene_id = $1", scene.scene_id)
                finally:
                    await conn.close()
                rows.append((frames, predicted, actual.seconds, f"{attempts}/{shots}"))
        workers.assert_alive()
    finally:
        workers.stop_all()
        shutil.rmtree(media, ignore_errors=True)
        await drop_database(base.database_url, f"tower_bench_eta_{unique}")
        await delete_topics(base.kafka_bootstrap, settings.topic_prefix)

    errors = [abs(p.seconds - a) / a for _, p, a, _ in rows]
    predicted_total, actual_total = sum(p.seconds for _, p, _, _ in rows), sum(a for _, _, a, _ in rows)
    table = [f"| {frames} | {attempts} | {p.seconds:.1f} s ({p.method}, {p.scenes} scenes) | {a:.1f} s | "
             f"{abs(p.seconds - a) / a:.0%} |" for frames, p, a, attempts in rows]
    return "\n".join([
        "## Scene ETA (`make bench`)",
        "",
        f"Command: `python -m bench.eta --history {history} --scenes {scenes}` (run by `make bench`). "
        f"Date: {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, the seven stages as worker processes, "
        f"renderer {settings.render_backend} ({workflow}) at {settings.render_width}x{settings.render_height}, "
        f"{settings.render_fps} fps. {history} scenes of 4-12 s, one at a time, make the history; each of {scenes} "
        "more is predicted before it is submitted (the estimate `scene/plan` and `tower submit` report) and compared "
        "with its actual time, request to the last final score.",
        "",
        f"- **Per scene: mean error {statistics.fmean(errors):.0%}, median {statistics.median(errors):.0%}, largest "
        f"{max(errors):.0%}** (goal: within 25%).",
        f"- **All {len(rows)} together: predicted {predicted_total:.1f} s, actual {actual_total:.1f} s, error "
        f"{abs(predicted_total - actual_total) / actual_total:.0%}** (what a batch's ETA would be off by).",
        "- A scene's retries are not known before it runs: the history's average is in the estimate, so a scene "
        "that needs more attempts than usual (the attempts column: scored attempts / shots) takes longer than "
        "predicted, and one that needs fewer, less.",
        "",
        "| planned frames | attempts / shots | predicted | actual | error |",
        "|---:|---:|---:|---:|---:|",
        *table,
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, default=10, help="finished scenes before predicting (default 10)")
    parser.add_argument("--scenes", type=int, default=10, help="scenes predicted and measured (default 10)")
    args = parser.parse_args()
    write_section("eta", asyncio.run(run(args.history, args.scenes)))


if __name__ == "__main__":
    main()
