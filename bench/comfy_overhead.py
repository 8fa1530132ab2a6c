"""Client overhead per ComfyUI job -> docs/BENCHMARKS.md (section ``comfy``).

Overhead = the job's wall time as the caller sees it (submit, websocket follow, history read,
GET /view of every output, writing the frames into the media store; the history delete runs in the background)
minus the server's own execution time (``execution_start`` -> ``execution_success`` stamps in the
history's status messages, millisecond resolution). It runs the built-in model-free template
(EmptyImage -> ImageAddNoise -> SaveImage) with a new seed per job so ComfyUI's cache never
short-cuts a run.

    python -m bench.comfy_overhead [--jobs 40] [--frames 4] [--size 64x48]

Uses the ComfyUI on ``TOWER_COMFY_PORT`` (default 8188), starting it with infra/comfyui/comfyctl
when none answers, and stopping it again if it started it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.report import percentile, write_section
from comfy.jobs import JobResult
from comfy.outputs import fetch, output_files
from comfy.pool import ComfyPool
from comfy.workflow import BUILTIN_TEMPLATE, WorkflowTemplate, read_template_file
from render.comfyui import store_outputs

REPO = Path(__file__).resolve().parents[1]
COMFYCTL = REPO / "infra" / "comfyui" / "comfyctl"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/system_stats", timeout=3) as response:
            return "system" in json.load(response)
    except OSError:
        return False


async def measure(url: str, jobs: int, frames: int, width: int, height: int, warmup: int) -> list[tuple[float, float]]:
    """(wall_ms, server_ms) per measured job."""
    name, data, sha = read_template_file(BUILTIN_TEMPLATE)
    template = WorkflowTemplate.from_graph(name, data, sha)
    pool = ComfyPool([url])
    await pool.start()
    samples: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as media:
        for i in range(warmup + jobs):
            graph = template.patch({"seed": 1000 + i, "width": width, "height": height, "frame_count": frames})
            seen: list[JobResult] = []

            async def finish(client, result: JobResult, seen=seen, folder=Path(f"job{i}")) -> int:
                seen.append(result)
                blobs = await fetch(client, output_files(result.history))
                refs = await asyncio.to_thread(store_outputs, Path(media), folder, blobs)
                return len(refs)

            started = time.perf_counter()
            stored = await pool.run(graph, finish=finish, deadline_s=60)
            wall_ms = (time.perf_counter() - started) * 1000
            server_ms = seen[-1].server_ms
            if stored != frames or server_ms is None:
                raise SystemExit(f"job {i}: {stored} frames, server time {server_ms}")
            if i >= warmup:
                samples.append((wall_ms, server_ms))
    await pool.aclose()
    return samples


def report(samples: list[tuple[float, float]], frames: int, width: int, height: int, version: str) -> str:
    walls = [w for w, _ in samples]
    servers = [s for _, s in samples]
    overheads = [w - s for w, s in samples]

    def row(label: str, values: list[float]) -> str:
        return (
            f"| {label} | {statistics.median(values):.1f} | {percentile(values, 95):.1f} | "
            f"{statistics.fmean(values):.1f} | {min(values):.1f} | {max(values):.1f} |"
        )

    goal = "met" if statistics.median(overheads) <= 20 else "NOT met"
    return "\n".join(
        [
            "## ComfyUI client overhead",
            "",
            f"`python -m bench.comfy_overhead --jobs {len(samples)} --frames {frames} --size {width}x{height}` "
            f"against a real ComfyUI {version} (CPU, same machine, one server), built-in model-free template, "
            f"{frames} PNG frames of {width}x{height} per job, a new seed per job (no cache hits).",
            "",
            "Overhead = wall time of the whole job as the caller sees it (POST /prompt, websocket follow, "
            "GET /history, GET /view of each frame, writing frames into the media store; "
            "the POST /history delete runs in the background) "
            "minus the server's execution time (`execution_start`..`execution_success` stamps, 1 ms resolution).",
            "",
            "| ms per job | p50 | p95 | mean | min | max |",
            "|---|---|---|---|---|---|",
            row("wall (client)", walls),
            row("server execution", servers),
            row("**overhead**", overheads),
            "",
            f"Goal <= 20 ms overhead (p50): {goal}.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", default="64x48")
    parser.add_argument("--no-write", action="store_true", help="print the section only")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    port = int(os.environ.get("TOWER_COMFY_PORT", "8188"))
    url = f"http://127.0.0.1:{port}"
    started_here = False
    if not _answers(url):
        subprocess.run([str(COMFYCTL), "start"], check=True, env={**os.environ, "TOWER_COMFY_PORT": str(port)})
        started_here = True
    try:
        with urllib.request.urlopen(f"{url}/system_stats", timeout=3) as response:
            version = json.load(response)["system"].get("comfyui_version", "?")
        samples = asyncio.run(measure(url, args.jobs, args.frames, width, height, args.warmup))
    finally:
        if started_here:
            subprocess.run([str(COMFYCTL), "stop"], env={**os.environ, "TOWER_COMFY_PORT": str(port)})
    body = report(samples, args.frames, width, height, version)
    print(body)
    if not args.no_write:
        write_section("comfy", body)


if __name__ == "__main__":
    main()
