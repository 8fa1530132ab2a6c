"""HTTP API benchmark: wrk against ``workflow/integrate`` and ``scene/plan``, beside the raw
aiokafka produce rate measured in the same run.

Run with ``make bench-api`` (starts Kafka and PostgreSQL when they are not up, installs wrk when
missing). ``tower api`` runs as a child process with a token, over its own topics and database;
no agents run (the API only produces). The load comes from wrk, a second process on loopback:
a fixed number of connections, each sending its next request as soon as the previous one is
answered, for a fixed duration. The yardstick is a third process: an AIOKafkaProducer with the
API's settings (acks=all, idempotence, linger_ms=1), as many coroutines as wrk has connections,
each calling ``send_and_wait`` on a scene.requested-sized value with the event's headers in a
loop, for the same duration, on the same broker and topic.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.report import percentile, write_section
from eventlog.follow import new_scene_id, scene_envelope
from events.models import SceneRequested
from events.topics import SCENE_REQUESTED
from foundation.kafka import delete_topics, ensure_topics, partitions_of
from foundation.settings import Settings
from store.pool import create_database, drop_database
from tower.testing import start_api

INTEGRATE = "/api/director/workflow/integrate"
PLAN = "/api/director/scene/plan"
INTEGRATE_BODY = {"session_id": "bench", "scene_description": "Create a scene where Kai fights the dragon",
                  "characters": ["Kai", "Dragon"]}
PLAN_BODY = {"session_id": "test", "scene_description": "test scene"}
INTEGRATE_GOAL_RATIO, INTEGRATE_GOAL_P99_MS, PLAN_GOAL_RPS = 0.5, 50.0, 1000.0

# wrk script: POST the body with the token; count statuses per thread; print one JSON line at the end.
WRK_LUA = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {{}} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  local counts = {{}}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses")) do counts[code] = (counts[code] or 0) + n end
  end
  local parts = {{}}
  for code, n in pairs(counts) do table.insert(parts, string.format('"%d": %d', code, n)) end
  local e = summary.errors
  io.write(string.format('BENCH_JSON {{"requests": %d, "duration_us": %d, "statuses": {{%s}}, '
    .. '"errors": {{"connect": %d, "read": %d, "write": %d, "timeout": %d}}, '
    .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}}\\n',
    summary.requests, summary.duration, table.concat(parts, ", "), e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


@dataclass
class Load:
    """One measured load: requests (or messages) per second and latency in milliseconds."""

    name: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]
    socket_errors: int
    server_cpu: float | None = None  # share of one core used by the process answering (API, or raw producer)
    machine_cpu: float | None = None  # share of all cores busy

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_ms(self) -> float | None:
        """CPU milliseconds the answering process spent per request (message)."""
        return None if self.server_cpu is None else self.server_cpu * self.seconds * 1000 / max(1, self.requests)

    @property
    def non_2xx(self) -> int:
        return sum(n for code, n in self.statuses.items() if not code.startswith("2"))


# -- the yardstick (its own process) -------------------------------------------------------------

async def raw_produce(bootstrap: str, topic: str, connections: int, duration_s: float, warmup_s: float) -> dict:
    """``connections`` coroutines, each ``send_and_wait`` in a loop for ``duration_s`` after a warm-up."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", client_id="tower-bench-raw",
                                enable_idempotence=True, linger_ms=1, request_timeout_ms=10_000)
    await producer.start()
    request = SceneRequested(scene_id=new_scene_id(), session_id="bench", characters=["Kai", "Dragon"],
                             description="Create a scene where Kai fights the dragon")
    envelope = scene_envelope(request, source="tower/api")
    value, headers = envelope.encode_value(), envelope.headers()
    latencies: list[float] = []
    sent = 0
    try:
        measuring = False
        stop_at = time.perf_counter() + warmup_s + duration_s

        async def worker(index: int) -> None:
            nonlocal sent
            n = 0
            while (now := time.perf_counter()) < stop_at:
                key = f"scene-{index:04d}{n:08x}".encode()  # a new scene id each time, like the API
                n += 1
                await producer.send_and_wait(topic, value, key=key, headers=headers)
                if measuring:
                    latencies.append((time.perf_counter() - now) * 1000)
                    sent += 1

        tasks = [asyncio.create_task(worker(i)) for i in range(connections)]
        await asyncio.sleep(warmup_s)
        measuring, started, cpu_started = True, time.perf_counter(), time.process_time()
        await asyncio.gather(*tasks)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        await producer.stop()
    return {"messages": sent, "seconds": elapsed, "cpu": cpu / elapsed, "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99), "value_bytes": len(value),
            "header_bytes": sum(len(k) + len(v) for k, v in headers),
            "loop": type(asyncio.get_running_loop()).__module__.split(".")[0]}


def raw_main(args: argparse.Namespace) -> None:
    try:
        import uvloop  # the API's uvicorn runs on uvloop when it is installed; so does the yardstick

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(raw_produce(args.bootstrap, args.topic, args.connections, args.duration, args.warmup))
    print(json.dumps(result))


# -- the API process and the load ------------------------------------------------------------------

def loaded_modules(pid: int) -> set[str]:
    """Which of uvloop / httptools the server process has loaded (its native libraries in its maps)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return set()
    return {name for name in ("uvloop", "httptools") if f"/{name}/" in maps}


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its live descendants (uvicorn workers, if any)."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # ppid, utime + stime
    tree = {pid}
    for _ in range(3):  # a child's pid may be lower than its parent's: settle in a few passes
        tree |= {p for p, (ppid, _) in stats.items() if ppid in tree}
    total = sum(stats[p][1] for p in tree if p in stats)
    return total / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies over all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class CpuMeter:
    def __init__(self, pid: int | None) -> None:
        self.pid = pid

    def __enter__(self) -> CpuMeter:
        self.wall = time.perf_counter()
        self.proc = process_cpu_s(self.pid) if self.pid else 0.0
        self.busy, self.total = machine_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.wall
        busy, total = machine_cpu()
        self.api = (process_cpu_s(self.pid) - self.proc) / wall if self.pid else None
        self.machine = (busy - self.busy) / max(1, total - self.total)


def wrk(url: str, path: str, body: dict, token: str, connections: int, duration_s: int, threads: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_LUA.format(body=json.dumps(body), token=token))
    try:
        out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration_s}s",
                              "--timeout", "5s", "-s", script.name, f"{url}{path}"],
                             capture_output=True, text=True, check=True, timeout=duration_s + 60).stdout
    finally:
        os.unlink(script.name)
    line = next((x for x in out.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    return json.loads(line.removeprefix("BENCH_JSON "))


def wrk_load(name: str, api_pid: int, *args: object) -> Load:
    with CpuMeter(api_pid) as cpu:
        result = wrk(*args)
    errors = result["errors"]
    return Load(name, result["requests"], result["duration_us"] / 1e6, result["p50_us"] / 1000,
                result["p99_us"] / 1000, result["statuses"],
                errors["connect"] + errors["read"] + errors["write"] + errors["timeout"], cpu.api, cpu.machine)


def raw_load(bootstrap: str, topic: str, connections: int, duration_s: int, warmup_s: float) -> tuple[Load, dict]:
    command = [sys.executable, "-m", "bench.api", "--raw-producer", "--bootstrap", bootstrap, "--topic", topic,
               "--connections", str(connections), "--duration", str(duration_s), "--warmup", str(warmup_s)]
    with CpuMeter(None) as cpu:
        out = subprocess.run(command, capture_output=True, text=True, check=True,
                             timeout=duration_s + warmup_s + 120).stdout
    result = json.loads(out.strip().splitlines()[-1])
    load = Load("raw aiokafka produce", result["messages"], result["seconds"], result["p50_ms"], result["p99_ms"],
                {}, 0, result["cpu"], cpu.machine)
    return load, result


async def topic_end(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = await partitions_of(consumer, topic)
        return sum((await consumer.end_offsets(parts)).values())
    finally:
        await consumer.stop()


# -- the run and the report ------------------------------------------------------------------------

async def prepare(unique: str) -> tuple[Settings, str]:
    base = Settings()
    database_url = await create_database(base.database_url, f"tower_bench_api_{unique}")
    settings = Settings(topic_prefix=f"benchapi{unique}.", group_prefix=f"benchapi{unique}",
                        database_url=database_url)
    await ensure_topics(settings)
    return settings, base.database_url


def run(connections: int, duration_s: int, warmup_s: int, threads: int, rounds: int) -> str:
    unique = uuid.uuid4().hex[:8]
    settings, server_db = asyncio.run(prepare(unique))
    topic = settings.topic(SCENE_REQUESTED.name)
    bootstrap = settings.kafka_bootstrap
    token = secrets.token_urlsafe(24)
    state = Path(tempfile.mkdtemp(prefix="tower-bench-api-"))
    env = {**os.environ, "TOWER_TOPIC_PREFIX": settings.topic_prefix, "TOWER_GROUP_PREFIX": settings.group_prefix,
           "TOWER_DATABASE_URL": settings.database_url, "TOWER_MEDIA_DIR": str(state / "media"),
           "TOWER_STATE_DIR": str(state / "state"), "TOWER_LOG_LEVEL": "WARNING"}
    server = start_api(env, state / "api.log", token)
    process, url = server.process, server.url
    raws, plans, integrates, checks, background = [], [], [], [], []
    try:
        modules = loaded_modules(process.pid)
        for number in range(1, rounds + 1):
            with CpuMeter(None) as idle:  # whatever else runs on the machine, before this round's load
                time.sleep(2)
            background.append(idle.machine)
            if idle.machine > 0.2:
                print(f"bench-api: warning: the machine is {idle.machine:.0%} busy before round {number}",
                      file=sys.stderr)
            print(f"bench-api: round {number}/{rounds}: raw aiokafka produce, then scene/plan, then "
                  f"workflow/integrate; {warmup_s} s warm-up + {duration_s} s x {connections} each", file=sys.stderr)
            raw, raw_info = raw_load(bootstrap, topic, connections, duration_s, warmup_s)
            raws.append(raw)
            wrk(url, PLAN, PLAN_BODY, token, connections, warmup_s, threads)
            plans.append(wrk_load("scene/plan", process.pid, url, PLAN, PLAN_BODY, token, connections, duration_s,
                                  threads))
            # The warm-up also starts the API's producer; the topic is counted around the measured run only.
            wrk(url, INTEGRATE, INTEGRATE_BODY, token, connections, warmup_s, threads)
            time.sleep(1)
            before = asyncio.run(topic_end(bootstrap, topic))
            integrate = wrk_load("workflow/integrate", process.pid, url, INTEGRATE, INTEGRATE_BODY, token,
                                 connections, duration_s, threads)
            integrates.append(integrate)
            time.sleep(2)  # requests cut off when wrk stopped still finish their produce
            checks.append((asyncio.run(topic_end(bootstrap, topic)) - before, integrate.statuses.get("202", 0)))
            print(f"bench-api: round {number}: integrate {integrate.rate:,.0f}/s p99 {integrate.p99_ms:.1f} ms, "
                  f"plan {plans[-1].rate:,.0f}/s, raw {raw.rate:,.0f}/s", file=sys.stderr)
        modules |= loaded_modules(process.pid)
    finally:
        server.stop()
        asyncio.run(drop_database(server_db, f"tower_bench_api_{unique}"))
        asyncio.run(delete_topics(bootstrap, settings.topic_prefix))
    return report(connections, duration_s, warmup_s, threads, raws, raw_info, plans, integrates, checks, modules,
                  background)


def median_round(loads: list[Load]) -> Load:
    """The round with the median rate (the lower middle one for an even count): one real run's figures."""
    return sorted(loads, key=lambda load: load.rate)[(len(loads) - 1) // 2]


def report(connections: int, duration_s: int, warmup_s: int, threads: int, raws: list[Load], raw_info: dict,
           plans: list[Load], integrates: list[Load], checks: list[tuple[int, int]], modules: set[str],
           background: list[float]) -> str:
    raw, plan, integrate = median_round(raws), median_round(plans), median_round(integrates)
    ratio = integrate.rate / raw.rate
    grew, accepted = sum(g for g, _ in checks), sum(a for _, a in checks)
    # Requests wrk stopped waiting for at the end of a run: the API produced them anyway, at most one per connection.
    topic_ok = all(0 <= g - a <= connections for g, a in checks)
    non_2xx = sum(load.non_2xx for load in plans + integrates)
    socket_errors = sum(load.socket_errors for load in plans + integrates)

    def row(load: Load) -> str:
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(load.statuses.items())) or "-"
        return (f"| {load.name} | {load.requests} | **{load.rate:,.0f}** | {load.p50_ms:.1f} | {load.p99_ms:.1f} | "
                f"{load.non_2xx} | {load.socket_errors} | {codes} | {load.server_cpu * 100:.0f}% | {load.cpu_ms:.3f} | "
                f"{load.machine_cpu * 100:.0f}% |")

    def rates(loads: list[Load]) -> str:
        return " / ".join(f"{load.rate:,.0f} (p99 {load.p99_ms:.0f} ms)" for load in loads)

    def verdict(met: bool, text: str, short: str) -> str:
        return f"{text}: **met**." if met else f"{text}: **not met** ({short})."

    ratio_goal = verdict(ratio >= INTEGRATE_GOAL_RATIO,
                         f"`workflow/integrate` >= {INTEGRATE_GOAL_RATIO:.0%} of the raw produce rate "
                         f"({integrate.rate:,.0f} / {raw.rate:,.0f} = {ratio:.0%})",
                         f"{INTEGRATE_GOAL_RATIO * raw.rate - integrate.rate:,.0f} requests/s short, "
                         f"{INTEGRATE_GOAL_RATIO / ratio:.2f}x the rate needed")
    p99_goal = verdict(integrate.p99_ms <= INTEGRATE_GOAL_P99_MS,
                       f"`workflow/integrate` p99 <= {INTEGRATE_GOAL_P99_MS:.0f} ms ({integrate.p99_ms:.1f} ms)",
                       f"{integrate.p99_ms - INTEGRATE_GOAL_P99_MS:.1f} ms over")
    plan_goal = verdict(plan.rate >= PLAN_GOAL_RPS,
                        f"`scene/plan` >= {PLAN_GOAL_RPS:,.0f} requests/s ({plan.rate:,.0f})",
                        f"{PLAN_GOAL_RPS - plan.rate:,.0f} requests/s short, {PLAN_GOAL_RPS / plan.rate:.2f}x needed")
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
        cpu = f"{model} ({platform.machine()})"
    except (OSError, StopIteration):
        pass
    server = " + ".join(sorted(modules)) or "asyncio + h11 (neither uvloop nor httptools loaded)"
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("[")[0].strip()
    return "\n".join([
        "## HTTP API (`make bench-api`)",
        "",
        f"Command: `make bench-api` (`python -m bench.api --connections {connections} --duration {duration_s} "
        f"--warmup {warmup_s} --rounds {len(raws)} --threads {threads}`). Machine: {os.cpu_count()} cores, {cpu}, "
        f"{platform.python_implementation()} {platform.python_version()}. Date: {time.strftime('%Y-%m-%d')}. "
        "Kafka (single broker), PostgreSQL, `tower api` (one uvicorn process, its own topics and database, "
        f"{server} loaded in it) and the load generator all share these cores; no agents run. Other load on the "
        f"machine just before each round: {', '.join(f'{b:.0%}' for b in background)} of all cores busy.",
        "",
        f"Load: {wrk_version}, a second process on loopback, {threads} thread(s), **{connections} connections** "
        f"(closed loop: each sends its next request when the previous one is answered), {duration_s} s measured "
        f"after a {warmup_s} s warm-up, POST with the bearer token. `workflow/integrate` body "
        f"`{json.dumps(INTEGRATE_BODY)}` (no scene_id: a new scene per request, one acks=all produce each); "
        f"`scene/plan` body `{json.dumps(PLAN_BODY)}` (no events). Latency from wrk (send to last byte). "
        f"{len(raws)} rounds, each: yardstick, `scene/plan`, `workflow/integrate`; the table shows each "
        "scenario's median round (by rate). Server CPU: the `tower api` process (the yardstick's own process in "
        "its row); machine CPU: all cores, everything on the machine.",
        "",
        "| scenario | requests | requests/s | p50 ms | p99 ms | non-2xx | socket errors | statuses | server CPU "
        "(of one core) | server CPU ms/request | machine CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
        row(integrate),
        row(plan),
        row(raw),
        "",
        f"Yardstick (last row), a separate process in the same run: AIOKafkaProducer with the API's settings "
        f"(acks=all, idempotence, linger_ms=1), {connections} coroutines each awaiting `send_and_wait` in a loop "
        f"for {duration_s} s after a {warmup_s} s warm-up ({raw_info['loop']} event loop, as the API's uvicorn), "
        f"same broker and topic (`scene.requested`, a new key per message), a {raw_info['value_bytes']} B "
        f"scene.requested value with its {raw_info['header_bytes']} B of CloudEvents headers: "
        f"**{raw.rate:,.0f} messages/s**, p50 {raw.p50_ms:.1f} ms, p99 {raw.p99_ms:.1f} ms.",
        "",
        f"Every round, requests/s: `workflow/integrate` {rates(integrates)}; `scene/plan` {rates(plans)}; "
        f"raw produce {rates(raws)}.",
        "",
        f"- Ratio `workflow/integrate` / raw produce: **{ratio:.0%}**.",
        f"- Errors over all rounds: {non_2xx} non-2xx responses, {socket_errors} socket errors.",
        f"- scene.requested grew by {grew} messages during the measured `workflow/integrate` runs; wrk counted "
        f"{accepted} 202s; the difference ({grew - accepted}) is the requests in flight when wrk stopped (at most "
        f"{connections} per run), which the API still produced: {'consistent' if topic_ok else '**inconsistent**'}.",
        f"- Goal {ratio_goal}",
        f"- Goal {p99_goal}",
        f"- Goal {plan_goal}",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=16, help="wrk connections = raw coroutines (default 16)")
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per scenario (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per scenario (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three loads; the median is shown (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: the API needs the cores)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    parser.add_argument("--raw-producer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_producer:
        raw_main(args)
        return
    section = run(args.connections, args.duration, args.warmup, args.threads, args.rounds)
    if not args.no_write:
        write_section("api", section)
    print(section)


if __name__ == "__main__":
    main()
