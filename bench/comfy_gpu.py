"""Seconds per shot of each render preset on a CUDA ComfyUI: ``make bench-comfy-gpu``.

Needs a ComfyUI server on a CUDA device at ``TOWER_COMFY_URLS`` (the first URL) with the preset's
model files in place (``tower models`` says which). For every preset that server can run, it
renders ``--shots`` shots of the Kai scene at the preset's native size and the refiner's steps,
through Tower's own ComfyUI backend (keyframe presets animated by the plan's camera), and records
the seconds per shot, the first (model load) apart. Without CUDA it says so and exits 2: no figure
is made up on a CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from bench.report import write_section
from comfy.client import ComfyClient
from comfy.errors import ComfyError
from comfy.pool import ComfyPool
from comfy.presets import PRESETS, preset
from comfy.survey import survey_server
from director.planner import plan_scene
from director.refiner import refine
from events.models import SceneRequested, ShotPlanned
from foundation.settings import get_settings
from render.comfyui import ComfyBackend

SECTION = "comfy-gpu"


async def cuda_device(url: str) -> str | None:
    """The server's CUDA device name, or ``None`` when it runs on something else (or not at all)."""
    client = ComfyClient(url)
    try:
        stats = await client.system_stats()
    except ComfyError:
        return None
    finally:
        await client.aclose()
    for device in stats.get("devices", []):
        if device.get("type") == "cuda":
            return str(device.get("name"))
    return None


def attempts(count: int, size: tuple[int, int]) -> list:
    request = SceneRequested(scene_id="bench-gpu", session_id="bench", description="Kai fights the dragon",
                             characters=["Kai", "Dragon"])
    plan = plan_scene(request, fps=8)
    out = []
    for i in range(count):
        shot = plan.shots[i % len(plan.shots)]
        planned = ShotPlanned(scene_id=request.scene_id, session_id="bench", attempt=1, max_attempts=1,
                              quality_threshold=0.5, shot=shot, overall_mood=plan.overall_mood,
                              lighting_suggestions=plan.lighting_suggestions)
        out.append(refine(planned, {}, width=size[0], height=size[1], workflow="bench", learner_version=f"bench-{i}"))
    return out


async def run(shots: int) -> int:
    settings = get_settings()
    url = settings.comfy_urls.split(",")[0].strip()
    device = await cuda_device(url)
    if device is None:
        print(f"bench-comfy-gpu needs a ComfyUI on a CUDA device at TOWER_COMFY_URLS ({url}); it found none, "
              "so it records nothing. Start ComfyUI on a GPU machine and run it there.", file=sys.stderr)
        return 2
    found = await survey_server(url, settings.comfy_models)
    rows = []
    for name in PRESETS:
        if not found.ready(name):
            print(f"{name}: skipped, missing {', '.join(f.path for f in found.missing.get(name, []))}")
            continue
        if PRESETS[name].needs_reference and settings.comfy_references_dir is None:
            print(f"{name}: skipped, needs TOWER_COMFY_REFERENCES_DIR")
            continue
        backend = ComfyBackend(ComfyPool.from_urls(url), render_preset=preset(name), model_names=settings.comfy_models,
                               references_dir=settings.comfy_references_dir, timeout_s=1800)
        seconds = []
        with tempfile.TemporaryDirectory() as media:
            try:
                for event in attempts(shots + 1, PRESETS[name].native_size):
                    started = time.perf_counter()
                    await backend.render(event, Path(media))
                    seconds.append(time.perf_counter() - started)
            finally:
                await backend.aclose()
        first, rest = seconds[0], seconds[1:]
        rows.append((name, PRESETS[name].native_size, first, statistics.median(rest)))
        print(f"{name}: first shot {first:.1f} s (loads the model), then {statistics.median(rest):.1f} s per shot")
    if not rows:
        print("no preset could run on that server: `tower models` lists what is missing", file=sys.stderr)
        return 1
    lines = ["## ComfyUI presets on a GPU", "", f"Run on {date.today().isoformat()}, ComfyUI at {url} on {device}; `make bench-comfy-gpu` "
             f"(`python -m bench.comfy_gpu --shots {shots}`). Median of {shots} shots after the first.", "",
             "| preset | size | first shot (model load) | per shot |", "|---|---|---:|---:|"]
    lines += [f"| {n} | {w}x{h} | {f:.1f} s | {m:.1f} s |" for n, (w, h), f, m in rows]
    write_section(SECTION, "\n".join(lines))
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shots", type=int, default=5, help="shots per preset after the first (default 5)")
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args.shots)))


if __name__ == "__main__":
    main()
