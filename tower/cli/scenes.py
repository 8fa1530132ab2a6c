"""Scene commands: ``tower submit`` (one scene, or a batch from a JSONL file; ``--follow``),
``tower status``, ``tower history``."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import asyncpg
import typer
from pydantic import ValidationError

from events.models import SceneRequested
from foundation.settings import Settings, mask_password
from tower.cli.app import app, connect, describe_invalid, lower_bound_text, query, rich_console, run_command, show


@app.command(help="Request a scene (produces scene.requested), or a batch of them with --file.")
def submit(
    description: Annotated[Optional[str], typer.Argument(
        metavar="[DESCRIPTION]", help='e.g. "Create a scene where Kai fights the dragon" (1-2000 characters)')] = None,
    file: Annotated[Optional[Path], typer.Option(
        "--file", "-f", help="a JSONL file, one scene per line in the seed's workflow/integrate shape "
        '({"scene_description": ..., "characters": [...], ...}); submitted as one batch with a progress bar')] = None,
    characters: Annotated[str, typer.Option(help="comma-separated names, e.g. Kai,Dragon")] = "",
    character_sheet: Annotated[Optional[list[str]], typer.Option(
        help='a character\'s design, NAME=DESCRIPTION (repeatable), e.g. "Kai=tall, silver hair, red scarf"; '
        "kept for later scenes naming the character")] = None,
    character_sheets: Annotated[Optional[Path], typer.Option(
        help='a JSON file of designs, {"Kai": "tall, silver hair, red scarf", ...}')] = None,
    session: Annotated[Optional[str], typer.Option(help="creative session id (default: a new one)")] = None,
    scene_id: Annotated[Optional[str], typer.Option(help="scene id (default: a new one)")] = None,
    style: Annotated[str, typer.Option(help="anime, ghibli, cyberpunk, or your own")] = "anime",
    max_attempts: Annotated[Optional[int], typer.Option(
        help="attempt budget per shot, 1-10 (default: the planner's TOWER_MAX_ATTEMPTS)")] = None,
    threshold: Annotated[Optional[float], typer.Option(
        help="retry under this composite score, 0-1 (default: the planner's TOWER_QUALITY_THRESHOLD)")] = None,
    duration: Annotated[Optional[float], typer.Option(
        help="scene length in seconds, 1-300: the planned shots sum to it (default: as the text needs)")] = None,
    max_render_seconds: Annotated[Optional[float], typer.Option(
        help="render-time budget of the scene in seconds: then shots get no more retries and go to review "
        "(default: the planner's TOWER_MAX_RENDER_SECONDS, or none)")] = None,
    preset: Annotated[Optional[str], typer.Option(
        help="the ComfyUI render preset of this scene, e.g. anime-sd15 (`tower models` lists them and where each "
        "can run; default: the renderer's TOWER_RENDER_PRESET)")] = None,
    follow: Annotated[bool, typer.Option(help="show progress, then the plan, scores and pattern updates")] = False,
    timeout: Annotated[float, typer.Option(help="seconds --follow (or a --file batch) waits")] = 600.0,
) -> None:
    if preset is not None:
        from comfy.presets import PRESETS

        if preset not in PRESETS:
            raise typer.BadParameter(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}",
                                     param_hint="--preset")
    if (description is None) == (file is None):
        raise typer.BadParameter("give a scene description, or --file with one scene per line (not both)")
    if file is not None:
        run_command(cmd_submit_file, file=file, session=session, timeout=timeout)
    else:
        run_command(cmd_submit, description=description, characters=characters,
                    sheets=read_character_sheets(character_sheet or [], character_sheets), session=session, scene_id=scene_id,
                    style=style, max_attempts=max_attempts, threshold=threshold, duration=duration, preset=preset,
                    max_render_seconds=max_render_seconds, follow=follow, timeout=timeout)


@app.command(help="A scene's plan, attempts (with their escalation and why they were retried) and scores.")
def status(
    scene_id: Annotated[str, typer.Argument(metavar="SCENE_ID", help="the scene id")],
    json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    run_command(cmd_status, scene_id=scene_id, json=json_)


@app.command(help="Regenerate one shot of a scene on your direction: a new attempt of that shot only, through the "
             "normal refine, render and score path; the scene is cut again once it is scored. The same request twice "
             "starts one render.")
def regenerate(
    scene_id: Annotated[str, typer.Argument(metavar="SCENE_ID", help="the scene id")],
    shot: Annotated[int, typer.Argument(metavar="SHOT", help="the shot number (1 is the first)", min=1)],
    note: Annotated[Optional[str], typer.Option(help='what to change, e.g. "less motion blur"; added to the prompt')] = None,
    prompt: Annotated[Optional[str], typer.Option(help="a generation prompt to use instead of the refined one")] = None,
    seed: Annotated[Optional[int], typer.Option(help="the seed to render with (0 to 2^32-1)", min=0, max=2**32 - 1)] = None,
    modifier: Annotated[Optional[str], typer.Option(
        help="the prompt pattern (`tower patterns` lists them); default: the one of the attempt cut in")] = None,
) -> None:
    run_command(cmd_regenerate, scene_id=scene_id, shot=shot, note=note, prompt=prompt, seed=seed, modifier=modifier)


@app.command(help="A creative session's scenes, oldest first, with their state and score.")
def history(
    session_id: Annotated[str, typer.Argument(metavar="SESSION_ID", help="the session id")],
    json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    run_command(cmd_history, session_id=session_id, json=json_)


def read_character_sheets(pairs: list[str], path: Path | None) -> dict[str, str]:
    """Designs from ``--character-sheets FILE`` (JSON) and ``--character-sheet NAME=DESC`` (these win)."""
    sheets: dict[str, str] = {}
    if path is not None:
        try:
            loaded = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise typer.BadParameter(f"{path}: {exc}", param_hint="--character-sheets") from None
        if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
            raise typer.BadParameter(f"{path}: a JSON object of name -> description", param_hint="--character-sheets")
        sheets.update(loaded)
    for pair in pairs:
        name, sep, sheet = pair.partition("=")
        if not sep or not name.strip() or not sheet.strip():
            raise typer.BadParameter(f"{pair!r} is not NAME=DESCRIPTION", param_hint="--character-sheet")
        sheets[name.strip()] = sheet.strip()
    return sheets


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    from eventlog.follow import (
        describe,
        end_offsets,
        follow_scene,
        new_scene_id,
        produce,
        scene_envelope,
        worth_showing,
    )

    scene_id = args.scene_id or new_scene_id()
    request = SceneRequested(
        scene_id=scene_id,
        session_id=args.session or f"session-{scene_id.removeprefix('scene-')}",
        description=args.description.strip(),
        characters=[c.strip() for c in args.characters.split(",") if c.strip()],
        style=args.style,
        max_attempts=args.max_attempts,
        quality_threshold=args.threshold,
        target_duration_s=args.duration,
        character_sheets=args.sheets,
        render_preset=args.preset,
        max_render_seconds=args.max_render_seconds,
    )

    async def run() -> int:
        from foundation.kafka import ensure_topics

        await ensure_topics(settings)
        offsets = await end_offsets(settings) if args.follow else None
        await produce(settings, [scene_envelope(request)])
        print(f"submitted {scene_id} (session {request.session_id}); {await eta_line(settings, request)}", flush=True)
        if not args.follow:
            return 0
        started = time.monotonic()
        await follow_scene(
            settings,
            scene_id,
            start_offsets=offsets,
            timeout_s=args.timeout,
            on_event=lambda topic, value: worth_showing(value) and print(
                f"  [{time.monotonic() - started:6.1f}s] {topic:<16} {describe(topic, value)}", flush=True
            ),
        )
        report = await wait_for_report(settings, scene_id, timeout_s=60)
        print_report(report)
        return 0

    return asyncio.run(run())


async def eta_line(settings: Settings, request: SceneRequested) -> str:
    """The scene's ETA from finished scenes of its workflow, in words (or why there is none)."""
    from director.eta import estimate
    from director.planner import plan_scene
    from render.backends import workflow_name
    from store.eta import scene_timings

    workflow = workflow_name(settings, request.render_preset)
    frames = sum(shot.frame_count for shot in plan_scene(request, fps=settings.render_fps).shots)
    try:
        conn = await connect(settings)
        try:
            history = await scene_timings(conn, workflow)
        finally:
            await conn.close()
    except asyncpg.UndefinedTableError:
        return "no ETA yet: no scene has finished on this database"
    except (ConnectionError, asyncpg.PostgresError) as exc:
        return f"no ETA: the history is not readable ({exc})"
    found = estimate(history, frames)
    if found is None:
        return f"no ETA yet: no scene rendered with {workflow} has finished"
    return f"ETA {found.seconds:.0f} s (from the {found.scenes} latest finished scenes of {workflow})"


async def wait_for_report(settings: Settings, scene_id: str, *, timeout_s: float) -> dict[str, Any]:
    """The scene's report once the learner has projected a final score for every shot."""

    from store.queries import scene_report

    conn = await connect(settings)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            report = await scene_report(conn, scene_id)
            if report and report["shots"]:
                finals = {a["shot_number"] for a in report["attempts"] if a["final"]}
                if len(finals) >= report["shots"][0]["shot_count"]:
                    return report
            if time.monotonic() > deadline:
                raise TimeoutError(f"the learner has not projected scene {scene_id} after {timeout_s:.0f}s")
            await asyncio.sleep(0.3)
    except asyncpg.PostgresError as exc:
        raise ConnectionError(f"reading scene {scene_id} from PostgreSQL failed: {exc}") from exc
    finally:
        await conn.close()


def print_report(report: dict[str, Any]) -> None:
    scene, shots = report["scene"], report["shots"]
    for failure in report.get("failures", []):
        print(f"FAILED: a {failure['original_topic']} event (partition {failure['original_partition']}, offset "
              f"{failure['original_offset']}) was dead-lettered by {failure['consumer']}: {failure['error_class']}: "
              f"{failure['reason']} (see `tower dlq`)")
    if scene is None:
        return
    print()
    print(f"Scene {scene['scene_id']}: {scene['description']!r}  (session {scene['session_id']})")
    if shots:
        print(f"overall mood: {shots[0]['overall_mood']}   lighting: {shots[0]['lighting_suggestions']}")
    print()
    print("Shot plan")
    print(f"  {'#':>2}  {'camera':<18} {'movement':<14} {'dur':>5}  {'characters':<20} action")
    for s in shots:
        chars = ", ".join(s["characters"])
        print(f"  {s['shot_number']:>2}  {s['camera_angle']:<18} {s['camera_movement']:<14} {s['duration']:>4.1f}s  {chars:<20} {s['action']}")
    print()
    print("Quality (every attempt; * = accepted / kept)")
    print(f"  {'shot':>4} {'try':>3}  {'rung':<16} {'modifier':<18} {'score':>6} {'ssim':>6} {'motion':>7} {'consist':>7}  verdict")
    best: dict[int, dict[str, Any]] = {}
    for a in report["attempts"]:
        if a["composite"] is None:
            continue
        if a["shot_number"] not in best or a["composite"] > best[a["shot_number"]]["composite"]:
            best[a["shot_number"]] = a
    for a in report["attempts"]:
        if a["composite"] is None:
            continue
        metrics = a["metrics"] or {}
        verdict = "passed" if a["passed"] else (f"failed: {a['score_reason']}" if a["score_status"] == "failed" else "below threshold")
        if a["final"] and not a["passed"]:
            verdict += "; NEEDS HUMAN REVIEW (budget spent)"
        mark = "*" if best.get(a["shot_number"]) is a else " "
        print(
            f" {mark}{a['shot_number']:>4} {a['attempt']:>3}  {a.get('escalation') or '-':<16} {a['modifier'] or '-':<18} {a['composite']:>6.3f} "
            f"{metrics.get('ssim_mean', float('nan')):>6.3f} {metrics.get('motion_level', float('nan')):>7.3f} {metrics.get('consistency', float('nan')):>7.3f}  {verdict}"
        )
    print_assembly(report.get("assembly"))
    retries = [a for a in report["attempts"] if a.get("retry_reason")]
    if retries:
        print()
        print("Retries (why each was made)")
        for a in retries:
            print(f"  shot {a['shot_number']} attempt {a['attempt']} ({a['escalation']}): {a['retry_reason']}")
    print()
    print("Pattern updates (Beta posterior after each credited score: first attempts and feedback)")
    from director.learning import Posterior

    for u in report["pattern_updates"]:
        post = Posterior(u["alpha_micros"], u["beta_micros"], u["observations"])
        print(
            f"  {u['context']:<48} {u['modifier']:<18} reward {u['reward']:.3f} -> mean {post.mean:.3f} "
            f"(95% lower bound {lower_bound_text(post)}, n={post.observations})"
        )


def cmd_regenerate(args: argparse.Namespace, settings: Settings) -> int:
    import sys

    from director.modifiers import MODIFIERS
    from eventlog.follow import produce
    from events.models import Direction
    from store.pool import open_pool
    from store.regenerating import RegenerationRefused, mark_published, plan_regeneration

    if args.modifier is not None and args.modifier not in MODIFIERS:
        print(f"tower: no modifier {args.modifier!r}; modifiers: {', '.join(MODIFIERS)}", file=sys.stderr)
        return 2
    try:
        direction = Direction(note=args.note, prompt=args.prompt, seed=args.seed, modifier=args.modifier)
    except ValidationError as exc:
        print(f"tower: {describe_invalid(exc)}", file=sys.stderr)
        return 2

    async def run():  # noqa: ANN202 - Regeneration
        pool = await open_pool(settings.database_url, max_size=2)
        try:
            planned = await plan_regeneration(pool, args.scene_id, args.shot, direction, source="tower/cli")
            if not planned.published:
                await produce(settings, [planned.envelope])
                await mark_published(pool, planned.envelope.id)
            return planned
        finally:
            await pool.close()

    try:
        planned = asyncio.run(run())
    except RegenerationRefused as exc:
        print(f"tower: {exc}", file=sys.stderr)
        return 1
    value = planned.envelope.value
    what = "regenerating" if planned.new else "already requested (nothing started again):"
    print(f"{what} shot {value.shot.shot_number} of {value.scene_id} as attempt {value.attempt} "
          f"(event {planned.envelope.id}); `tower status {value.scene_id}` shows it, and the new cut once it is scored")
    return 0


def print_assembly(assembly: dict[str, Any] | None) -> None:
    print()
    if assembly is None:
        print("Film: not assembled yet (the editor cuts the scene once every shot is final)")
        return
    used = ", ".join(f"{s['shot_number']}:{s['attempt'] or '-'}" for s in assembly["shots"])
    print(f"Film ({assembly['duration_s']:.2f} s, {assembly['frame_count']} frames at {assembly['fps']} fps, "
          f"{assembly['width']}x{assembly['height']}; shot:attempt used {used})")
    for part in ("video", "storyboard", "timeline"):
        print(f"  {part:<10} {assembly[part].get('path', assembly[part]['uri'])}  (sha256 {assembly[part]['sha256'][:12]})")
    for cut in assembly["cuts"]:
        if cut["discontinuity"]:
            print(f"  continuity: cut after shot {cut['after_shot']}: {cut['reason']}")
    for character in assembly["characters"]:
        if character["discontinuity"]:
            print(f"  continuity: {character['character']} looks different across shots {character['shots']} "
                  f"(colour distance up to {character['max_colour_distance']:.1f})")


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from store.queries import scene_report

    report = query(settings, lambda conn: scene_report(conn, args.scene_id))
    if report and report.get("assembly"):
        for part in ("video", "storyboard", "timeline"):  # where a person finds the files
            report["assembly"][part]["path"] = str((settings.media_dir / report["assembly"][part]["uri"]).resolve())
    code = show(report, f"no scene {args.scene_id!r} in {mask_password(settings.database_url)}", args.json, print_report)
    return code or (1 if report["failures"] else 0)


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    from store.queries import session_history

    found = query(settings, lambda conn: session_history(conn, args.session_id))
    return show(found, f"no session {args.session_id!r}", args.json, print_history)


def print_history(found: dict[str, Any]) -> None:
    from rich.table import Table

    view = Table(title=f"session {found['session_id']}: {found['scene_count']} scene(s) since "
                 f"{found['created_at']:%Y-%m-%d %H:%M} UTC", title_justify="left")
    for column in ("requested", "scene", "status", "shots", "passed", "score", "description"):
        view.add_column(column, justify="right" if column in ("shots", "passed", "score") else "left",
                        no_wrap=column != "description")
    for scene in found["scenes"]:
        score = scene["mean_best_score"]
        view.add_row(f"{scene['requested_at']:%Y-%m-%d %H:%M}", scene["scene_id"], scene["status"],
                     str(scene["shot_count"] or "-"), str(scene["passed_shots"]),
                     "-" if score is None else f"{score:.3f}", scene["description"][:60])
    rich_console().print(view)


def cmd_submit_file(args: argparse.Namespace, settings: Settings) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from api.models import IntegrateRequest, scene_request
    from eventlog.follow import new_scene_id, produce, scene_envelope
    from foundation.kafka import ensure_topics
    from store.projections import open_batch
    from store.queries import batch_progress

    try:
        lines = [(n, line) for n, line in enumerate(args.file.read_text().splitlines(), start=1) if line.strip()]
    except OSError as exc:
        raise LookupError(f"cannot read {args.file}: {exc}") from exc
    batch_id = f"batch-{time.strftime('%Y%m%d%H%M%S')}-{new_scene_id().removeprefix('scene-')[:6]}"
    session_id = args.session or f"session-{batch_id.removeprefix('batch-')}"
    scenes = []
    for number, line in lines:
        try:
            body = IntegrateRequest.model_validate({"session_id": session_id, **json.loads(line)})
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"{args.file}:{number}: not a JSON object: {exc}") from None
        except ValidationError as exc:
            raise ValueError(f"{args.file}:{number}: {describe_invalid(exc).removeprefix('invalid input: ')}") from None
        scenes.append(scene_request(body, batch_id=batch_id, batch_size=len(lines)))
    if not scenes:
        raise ValueError(f"{args.file} has no scenes (one JSON object per line)")

    async def run() -> int:
        await ensure_topics(settings)
        conn = await connect(settings)
        try:
            taken = await open_batch(conn, batch_id, [s.scene_id for s in scenes], datetime.now(UTC))
            if taken:
                raise ValueError(f"scene id(s) exist already: {', '.join(taken[:10])}; scene ids must be unique")
            await produce(settings, [scene_envelope(s) for s in scenes])
            print(f"submitted batch {batch_id}: {len(scenes)} scene(s), session {session_id}", flush=True)
            columns = (TextColumn("scenes done"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
            deadline = time.monotonic() + args.timeout
            with Progress(*columns) as bar:
                task = bar.add_task("batch", total=len(scenes), detail="")
                while True:
                    progress = await batch_progress(conn, batch_id)
                    bar.update(task, completed=progress["done"], detail=(
                        f"{progress['running']} running, {progress['queued']} queued, "
                        f"{progress['needs_review']} need review, {progress['failed']} failed"))
                    if progress["done"] >= len(scenes):
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"batch {batch_id} not done after {args.timeout:.0f}s "
                                           f"(`tower history {session_id}` shows where it stands)")
                    await asyncio.sleep(0.5)
            print(f"batch {batch_id} done: see `tower history {session_id}`")
            return 1 if progress["failed"] else 0
        finally:
            await conn.close()

    return asyncio.run(run())
