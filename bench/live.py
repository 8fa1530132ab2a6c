"""Live-stream watchers: many SSE clients of one API process, the hub against the code it replaced.

Run with ``make bench-api`` (after the wrk loads) or alone: ``python -m bench.live``. For each
scenario, the seven agents run as processes (the ``sleep`` render fake, so a scene takes a few
seconds and no CPU), one ``tower api`` process serves the streams, and a second process opens the
watchers at once (plain asyncio sockets, so the clients cost little) right after the scene was
submitted, and reads each stream to its end. Scenarios: N watchers of one scene (N = 10, 100, 300,
1,000) and 200 watchers each of 5 scenes.

Contenders, in the same run on the same broker:
- ``hub``: this checkout's API, one Kafka tail per process (api/live_hub.py);
- ``per-client``: the API of ``--baseline`` (default: the last commit before the hub), a git
  worktree of it, whose every SSE client opened its own Kafka consumer over every partition.

Per scenario: the watchers' first-event latency (connect to first event) p50/p95, how many reached
``complete``, the events delivered, and the API process's CPU per delivered event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from statistics import median, quantiles

import httpx

from bench.api import process_cpu_s
from bench.report import write_section
from foundation.kafka import delete_topics, ensure_topics
from foundation.settings import Settings
from store.pool import create_database, drop_database
from tower.testing import StageProcesses, start_api

REPO = Path(__file__).resolve().parents[1]
# The last commit whose API opened one Kafka consumer per SSE client.
BASELINE_REF = "fc5fb87"
SCENE = {"session_id": "bench-live", "scene_description": "Create a scene where Kai fights the dragon",
         "characters": ["Kai", "Dragon"]}
STREAM_TIMEOUT_S = 300


# --- the client process -------------------------------------------------------------------------

# Frames start at a line start: an SSE id line, or the event line of an ending (which has no id).
_ID_LINE = re.compile(rb"(?:^|\n)id: ")
_ENDING = re.compile(rb"(?:^|\n)event: (complete|failed|overflow|error)\n")


async def _watch(host: str, port: int, path: str) -> dict:
    """One SSE client over a raw socket: the seconds to its first event, events, how it ended.
    It counts frames without parsing them (the server sends whole frames per chunk), so that a
    thousand clients in one process cost little beside the API they measure."""
    started = time.perf_counter()
    first = None
    events = 0
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
        status = await reader.readline()
        answered = time.perf_counter() - started
        if b" 200 " not in status:
            return {"first_s": None, "events": 0, "ending": status.decode().strip()}
        while (await reader.readline()) not in (b"\r\n", b""):
            pass  # headers
        while True:
            size = int((await reader.readline()).strip() or b"0", 16)  # chunked transfer encoding
            if size == 0:
                return {"first_s": first, "events": events, "ending": "closed", "answered_s": answered}
            chunk = (await reader.readexactly(size + 2))[:-2]
            found = len(_ID_LINE.findall(chunk))
            if found and first is None:
                first = time.perf_counter() - started
            events += found
            if ending := _ENDING.search(chunk):
                return {"first_s": first, "events": events, "ending": ending.group(1).decode(), "answered_s": answered}
    finally:
        writer.close()


async def _clients(url: str, paths: list[str], per_path: int) -> list[dict]:
    host, port = url.removeprefix("http://").split(":")
    tasks = [_watch(host, int(port), path) for path in paths for _ in range(per_path)]
    return await asyncio.wait_for(asyncio.gather(*tasks), STREAM_TIMEOUT_S)


def client_main(args: argparse.Namespace) -> None:
    results = asyncio.run(_clients(args.url, args.paths.split(","), args.per_path))
    json.dump(results, sys.stdout)


# --- the scenarios ------------------------------------------------------------------------------

@dataclass
class Outcome:
    contender: str
    scenes: int
    per_scene: int
    first_p50_s: float | None
    first_p95_s: float | None
    completed: int
    events: int
    api_cpu_s: float
    wall_s: float
    endings: dict[str, int]

    @property
    def watchers(self) -> int:
        return self.scenes * self.per_scene

    @property
    def cpu_us_per_event(self) -> float | None:
        return self.api_cpu_s / self.events * 1e6 if self.events else None


def scenario(contender: str, api_url: str, api_pid: int, token: str, scenes: int, per_scene: int) -> Outcome:
    headers = {"Authorization": f"Bearer {token}"}
    paths = []
    for _ in range(scenes):
        answer = httpx.post(f"{api_url}/api/director/workflow/integrate", json=SCENE, headers=headers, timeout=30)
        answer.raise_for_status()
        paths.append(answer.json()["links"]["events"])
    cpu = process_cpu_s(api_pid)
    wall = time.perf_counter()
    client = subprocess.run(
        [sys.executable, "-m", "bench.live", "--client", "--url", api_url, "--paths", ",".join(paths),
         "--per-path", str(per_scene)], capture_output=True, text=True, timeout=STREAM_TIMEOUT_S + 60,
        env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
    )
    wall = time.perf_counter() - wall
    api_cpu = process_cpu_s(api_pid) - cpu
    if client.returncode != 0:
        raise RuntimeError(f"the watcher process failed ({contender}, {scenes}x{per_scene}): {client.stderr[-3000:]}")
    results = json.loads(client.stdout)
    if os.environ.get("BENCH_LIVE_DEBUG"):
        answered = sorted(r.get("answered_s") or 0 for r in results)
        print(f"bench-live: answered p50 {median(answered):.2f} s, max {answered[-1]:.2f} s", file=sys.stderr)
    firsts = sorted(r["first_s"] for r in results if r["first_s"] is not None)
    endings: dict[str, int] = {}
    for r in results:
        endings[r["ending"]] = endings.get(r["ending"], 0) + 1
    return Outcome(
        contender, scenes, per_scene,
        median(firsts) if firsts else None,
        quantiles(firsts, n=20)[18] if len(firsts) >= 20 else (max(firsts) if firsts else None),
        endings.get("complete", 0), sum(r["events"] for r in results), api_cpu, wall, endings,
    )


def baseline_tree(ref: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="tower-bench-live-baseline-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(folder), ref], check=True,
                   capture_output=True)
    return folder


def run(plan: list[tuple[int, int]], baseline: str | None, baseline_max: int) -> list[Outcome]:
    unique = uuid.uuid4().hex[:8]
    base = Settings()
    database_url = asyncio.run(create_database(base.database_url, f"tower_bench_live_{unique}"))
    settings = Settings(topic_prefix=f"benchlive{unique}.", group_prefix=f"benchlive{unique}",
                        database_url=database_url)
    asyncio.run(ensure_topics(settings))
    state = Path(tempfile.mkdtemp(prefix="tower-bench-live-"))
    env = {**os.environ, "TOWER_TOPIC_PREFIX": settings.topic_prefix, "TOWER_GROUP_PREFIX": settings.group_prefix,
           "TOWER_DATABASE_URL": database_url, "TOWER_MEDIA_DIR": str(state / "media"),
           "TOWER_STATE_DIR": str(state / "state"), "TOWER_LOG_LEVEL": "WARNING",
           "TOWER_RENDER_BACKEND": "sleep", "TOWER_SLEEP_RENDER_S": "1.0", "PYTHONPATH": str(REPO)}
    (state / "logs").mkdir(parents=True)
    workers = StageProcesses(env, state / "logs")
    contenders = [("hub", REPO)]
    tree = None
    if baseline:
        tree = baseline_tree(baseline)
        contenders.append(("per-client", tree))
    outcomes = []
    try:
        workers.start("planner", "refiner", "renderer", "scorer", "learner", "retrier")
        for name, code in contenders:
            server = start_api({**env, "PYTHONPATH": str(code)}, state / f"api-{name}.log", cwd=code)
            try:
                warm = scenario(name, server.url, server.process.pid, server.token, 1, 1)  # workers and API warm
                print(f"bench-live: {name}: warm-up scene {warm.endings}", file=sys.stderr)
                for scenes, per_scene in plan:
                    if name == "per-client" and scenes * per_scene > baseline_max:
                        continue
                    outcome = scenario(name, server.url, server.process.pid, server.token, scenes, per_scene)
                    print(f"bench-live: {name}: {scenes} scene(s) x {per_scene} watchers: first event p50 "
                          f"{outcome.first_p50_s or 0:.2f} s, {outcome.completed}/{outcome.watchers} complete, "
                          f"API CPU {outcome.api_cpu_s:.1f} s ({outcome.cpu_us_per_event or 0:.0f} us/event)",
                          file=sys.stderr)
                    outcomes.append(outcome)
            finally:
                server.stop()
    finally:
        workers.stop_all()
        asyncio.run(delete_topics(settings.kafka_bootstrap, settings.topic_prefix))
        asyncio.run(drop_database(base.database_url, f"tower_bench_live_{unique}"))
        if tree is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True)
    return outcomes


def report(outcomes: list[Outcome], baseline: str | None, command: str) -> str:
    def seconds(value: float | None) -> str:
        return f"{value:.2f}" if value is not None else "-"

    rows = [
        f"| {o.contender} | {o.scenes} x {o.per_scene:,} | {o.watchers:,} | {seconds(o.first_p50_s)} | "
        f"{seconds(o.first_p95_s)} | {o.completed:,}/{o.watchers:,} | {o.events:,} | {o.api_cpu_s:.1f} | "
        f"{o.cpu_us_per_event:.0f} | {o.wall_s:.1f} |" if o.cpu_us_per_event is not None else
        f"| {o.contender} | {o.scenes} x {o.per_scene:,} | {o.watchers:,} | - | - | 0/{o.watchers:,} | 0 | "
        f"{o.api_cpu_s:.1f} | - | {o.wall_s:.1f} |"
        for o in outcomes
    ]
    hub = [o for o in outcomes if o.contender == "hub"]
    met_complete = all(o.completed == o.watchers for o in hub)
    big = [o for o in hub if o.watchers >= 1000]
    met_first = all(o.first_p50_s is not None and o.first_p50_s <= 0.5 for o in big)
    one_scene = sorted((o for o in hub if o.scenes == 1 and o.cpu_us_per_event), key=lambda o: o.watchers)
    per_event = [o.cpu_us_per_event for o in one_scene]
    # Fixed costs (the request, the scene's seconds of polling) spread over more events as watchers
    # are added, so the figure falls; it must not rise beyond noise (a quarter) at the most watchers.
    flat = len(per_event) >= 2 and per_event[-1] <= 1.25 * per_event[0]
    return "\n".join([
        "## Live stream: watchers of one API process (`make bench-api`)",
        "",
        f"`{command}` on {os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}. The five agents run as processes with the `sleep` render fake (1 s per "
        "render, no CPU); one `tower api` process; the watchers are opened at once by a second process right "
        "after the scene(s) were submitted, and each reads its stream to the end. `hub`: this checkout (one "
        f"Kafka tail per API process); `per-client`: `{baseline or 'not run'}` (one Kafka consumer per client). "
        "First event: from the client's connect to its first event. CPU: the API process's user + system "
        "seconds while the watchers ran, per event delivered to a client.",
        "",
        "| API | scenes x watchers | watchers | first event p50 (s) | p95 (s) | reached `complete` | events "
        "delivered | API CPU (s) | API CPU per delivered event (us) | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"- Goal: every watcher reaches `complete`: {'met' if met_complete else '**not met**'}.",
        f"- Goal: first event p50 <= 0.5 s with 1,000 watchers: "
        f"{('met' if met_first else '**not met**') if big else 'not run'}"
        f" ({', '.join(f'{o.scenes} x {o.per_scene}: {seconds(o.first_p50_s)} s' for o in big) or '-'}).",
        f"- Goal: the API's CPU per delivered event does not grow with the watchers: "
        f"{'met' if flat else '**not met**'} ({', '.join(f'{o.watchers:,}: {o.cpu_us_per_event:.0f} us' for o in one_scene)}"
        " for one scene).",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", default="10,100,300,1000", help="watchers of one scene, per scenario")
    parser.add_argument("--multi", default="5x200", help="SCENESxWATCHERS scenario(s) beside them ('' for none)")
    parser.add_argument("--baseline", default=BASELINE_REF,
                        help=f"git ref of the per-client API to compare with (default {BASELINE_REF}; '' for none)")
    parser.add_argument("--baseline-max", type=int, default=300,
                        help="most watchers to open on the per-client API (each is a Kafka consumer; default 300)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    parser.add_argument("--per-path", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return
    plan = [(1, int(n)) for n in args.watchers.split(",") if n]
    plan += [tuple(int(v) for v in m.split("x")) for m in args.multi.split(",") if m]
    outcomes = run(plan, args.baseline or None, args.baseline_max)
    section = report(outcomes, args.baseline or None, "make bench-api (python -m bench.live)")
    if not args.no_write:
        write_section("live", section)
    print(section)


if __name__ == "__main__":
    main()
