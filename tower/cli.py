"""``tower``: run workers, submit and follow scenes, inspect results, replay and evaluate, manage
topics and schemas. The command line is a Typer app (options, help, errors); each command's
implementation is a ``cmd_*`` function of the parsed options and the settings."""

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar

import asyncpg
import typer
from pydantic import ValidationError
from typer.exceptions import TyperException

from agents.registry import STAGE_NAMES
from eventlog.follow import SceneFailed
from events.models import SceneRequested
from foundation.logs import configure_logging
from foundation.settings import Settings, get_settings, mask_password

if TYPE_CHECKING:
    from rich.console import Console

    from director.learning import Posterior

T = TypeVar("T")



app = typer.Typer(
    name="tower",
    help="Tower: an event-driven anime production director on Kafka. Settings come from TOWER_* environment "
    "variables (see `tower settings`).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
StageName = Enum("StageName", {name: name for name in (*STAGE_NAMES, "all")}, type=str)
TopicsAction = Enum("TopicsAction", {"create": "create", "list": "list"}, type=str)
TrendsBy = Enum("TrendsBy", {"day": "day", "pattern": "pattern", "workflow": "workflow"}, type=str)


def run_command(command: Callable[[argparse.Namespace, Settings], int], **params: Any) -> None:
    """Run a command's implementation with the settings in force; a non-zero result is the exit code."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    code = command(argparse.Namespace(**params), settings)
    if code:
        raise typer.Exit(code)


@app.command(help="Run a stage's Faust worker, or all five in this process (`all`, for development).")
def worker(stage: Annotated[StageName, typer.Argument(metavar="STAGE", help="planner, refiner, renderer, scorer, learner, or all")]) -> None:
    run_command(cmd_worker, stage=stage.value)


@app.command(help="Serve the HTTP API (and /docs) on TOWER_API_HOST:TOWER_API_PORT.")
def api(
    host: Annotated[Optional[str], typer.Option(help="bind address (default: TOWER_API_HOST, 127.0.0.1)")] = None,
    port: Annotated[Optional[int], typer.Option(help="port (default: TOWER_API_PORT, 8328)")] = None,
) -> None:
    run_command(cmd_api, host=host, port=port)


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
    follow: Annotated[bool, typer.Option(help="show progress, then the plan, scores and pattern updates")] = False,
    timeout: Annotated[float, typer.Option(help="seconds --follow (or a --file batch) waits")] = 600.0,
) -> None:
    if (description is None) == (file is None):
        raise typer.BadParameter("give a scene description, or --file with one scene per line (not both)")
    if file is not None:
        run_command(cmd_submit_file, file=file, session=session, timeout=timeout)
    else:
        run_command(cmd_submit, description=description, characters=characters,
                    sheets=read_character_sheets(character_sheet or [], character_sheets), session=session, scene_id=scene_id,
                    style=style, max_attempts=max_attempts, threshold=threshold, duration=duration, follow=follow,
                    timeout=timeout)


@app.command(help="A scene's plan, attempts (with their escalation and why they were retried) and scores.")
def status(
    scene_id: Annotated[str, typer.Argument(metavar="SCENE_ID", help="the scene id")],
    json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    run_command(cmd_status, scene_id=scene_id, json=json_)


@app.command(help="A creative session's scenes, oldest first, with their state and score.")
def history(
    session_id: Annotated[str, typer.Argument(metavar="SESSION_ID", help="the session id")],
    json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    run_command(cmd_history, session_id=session_id, json=json_)


@app.command(help="Quality over time per day, pattern or workflow version, with regression alerts; --plot writes a PNG.")
def trends(
    by: Annotated[TrendsBy, typer.Option(help="one line per day, per pattern or per workflow version")] = TrendsBy.day,
    days: Annotated[int, typer.Option(min=1, max=3650, help="how far back")] = 30,
    hourly: Annotated[bool, typer.Option(help="hourly buckets instead of daily")] = False,
    plot: Annotated[Optional[Path], typer.Option(help="also draw the mean score over time into this PNG")] = None,
    json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    run_command(cmd_trends, by=by.value, days=days, bucket="hour" if hourly else "day", plot=plot, json=json_)


@app.command(help="The learned pattern table (posterior mean, 95% lower bound, count) and each context's recommendation.")
def patterns(
    context: Annotated[Optional[str], typer.Option(help="only contexts containing this text")] = None,
) -> None:
    run_command(cmd_patterns, context=context)


@app.command(help="Off-policy evaluation: how other prompt policies would have scored, from the logged first "
             "attempts (IPS and self-normalised SNIPS with 95% intervals): each fixed modifier, uniform random, "
             "greedy by posterior mean (judged progressively), beside what Thompson sampling scored.")
def evaluate(
    context: Annotated[Optional[str], typer.Option(help="only contexts containing this text, e.g. close-up")] = None,
    since: Annotated[Optional[str], typer.Option(help="only attempts scored at or after this ISO time")] = None,
    json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    run_command(cmd_evaluate, context=context, since=since, json=json_)


@app.command(help="Rebuild the pattern table from quality.scored and feedback.submitted into a database, under its "
             "own consumer group, without re-issuing retries; prints the table's sha256 (the same log gives the "
             "same digest).")
def replay(
    database_url: Annotated[str, typer.Option(
        help="the database to rebuild into (migrated first), e.g. postgresql://tower@127.0.0.1:5433/tower_replay")],
    create: Annotated[bool, typer.Option(help="create the database first if it does not exist")] = False,
    since: Annotated[Optional[str], typer.Option(help="start at this ISO time (default: the beginning)")] = None,
    group: Annotated[Optional[str], typer.Option(help="consumer group (default: TOWER_GROUP_PREFIX-replay-<unix time>)")] = None,
) -> None:
    run_command(cmd_replay, database_url=database_url, create=create, since=since, group=group)


@app.command(help="Create the declared Kafka topics (and dead-letter topics), or list them.")
def topics(action: Annotated[TopicsAction, typer.Argument(metavar="ACTION", help="create or list")]) -> None:
    run_command(cmd_topics, action=action.value)


@app.command(help="Export the event JSON Schemas (one per event type) for producers.")
def schemas(
    action: Annotated[str, typer.Argument(metavar="export", help="export")],
    directory: Annotated[Path, typer.Argument(metavar="[DIR]", help="output folder")] = Path("schemas"),
) -> None:
    if action != "export":
        raise typer.BadParameter(f"unknown action {action!r}; use `tower schemas export [DIR]`")
    run_command(cmd_schemas, directory=directory)


@app.command(help="Apply the PostgreSQL migrations (`tower db migrate`).")
def db(action: Annotated[str, typer.Argument(metavar="migrate", help="migrate")]) -> None:
    if action != "migrate":
        raise typer.BadParameter(f"unknown action {action!r}; use `tower db migrate`")
    run_command(cmd_db)


@app.command(help="List dead letters (what failed, where from, why; exit 1 if any), or `dlq redrive [TOPIC] "
             "[--id CE_ID ...] [--offset N ...]` to re-publish them to their original topic once fixed.")
def dlq(
    words: Annotated[Optional[list[str]], typer.Argument(
        metavar="[redrive] [TOPIC]", help="a pipeline topic, e.g. shot.planned (default: all); `redrive` first to re-publish")] = None,
    limit: Annotated[int, typer.Option(help="newest N per topic")] = 20,
    id_: Annotated[Optional[list[str]], typer.Option("--id", help="redrive the letter of this event id (ce_id)")] = None,
    offset: Annotated[Optional[list[int]], typer.Option(help="redrive the letter at this dead-letter offset")] = None,
) -> None:
    run_command(cmd_dlq, words=words or [], limit=limit, id=id_ or [], offset=offset or [])


@app.command(help="Print the settings in force (passwords masked).")
def settings() -> None:
    run_command(cmd_settings)


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


def main(argv: list[str] | None = None) -> int:
    """The ``tower`` command: bad input gets one line and exit 2, never a traceback."""
    try:
        result = app(args=argv, prog_name="tower", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return 130
    except TyperException as exc:  # a usage error: an unknown option, a bad value, a missing argument
        if type(exc).__name__ == "NoArgsIsHelpError":  # plain `tower`: the help is the answer
            print(exc.format_message(), file=sys.stderr)
        else:
            print(f"tower: {exc.format_message()} (see --help)", file=sys.stderr)
        return 2
    except (ConnectionError, LookupError, TimeoutError) as exc:
        print(f"tower: {exc}", file=sys.stderr)
        return 2
    except SceneFailed as exc:
        print(f"tower: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        print(f"tower: {describe_invalid(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a setting the cluster cannot honour (raised with a full sentence)
        print(f"tower: {exc}", file=sys.stderr)
        return 2
    except asyncpg.UndefinedTableError as exc:
        print(f"tower: the database has no Tower schema yet ({exc}); run `tower db migrate`", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


# What a field of a command's input is called on the command line.
OPTION_NAMES = {"description": "the description", "target_duration_s": "--duration", "max_attempts": "--max-attempts", "quality_threshold": "--threshold",
                "characters": "--characters", "scene_id": "--scene-id", "session_id": "--session", "style": "--style"}


def describe_invalid(exc: ValidationError) -> str:
    """One line naming each invalid option and what is wrong with it."""
    problems = []
    for error in exc.errors(include_url=False)[:3]:
        field = str(error["loc"][0]) if error["loc"] else ""
        message = error["msg"]
        problems.append(f"{OPTION_NAMES.get(field, field or 'input')}: {message[:1].lower()}{message[1:]}")
    return "invalid input: " + "; ".join(problems) + " (see --help)"


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from tower.worker import run_stages

    run_stages(STAGE_NAMES if args.stage == "all" else [args.stage], settings)
    return 0


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    from api.app import serve

    overrides = {k: v for k, v in (("api_host", args.host), ("api_port", args.port)) if v is not None}
    try:
        serve(settings.model_copy(update=overrides))
    except ValueError as exc:
        print(f"tower: {exc}", file=sys.stderr)
        return 2
    return 0


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
    )

    async def run() -> int:
        from foundation.kafka import ensure_topics

        await ensure_topics(settings)
        offsets = await end_offsets(settings) if args.follow else None
        await produce(settings, [scene_envelope(request)])
        print(f"submitted {scene_id} (session {request.session_id})", flush=True)
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


async def wait_for_report(settings: Settings, scene_id: str, *, timeout_s: float) -> dict[str, Any]:
    """The scene's report once the learner has projected a final score for every shot."""
    import asyncpg

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


async def connect(settings: Settings):  # noqa: ANN201 - asyncpg.Connection, imported lazily
    import asyncpg

    try:
        return await asyncpg.connect(settings.database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ConnectionError(
            f"cannot connect to PostgreSQL at {mask_password(settings.database_url)!r}: {exc}. Start it with "
            "`make services` or set TOWER_DATABASE_URL."
        ) from exc


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


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from store.queries import scene_report

    report = query(settings, lambda conn: scene_report(conn, args.scene_id))
    code = show(report, f"no scene {args.scene_id!r} in {mask_password(settings.database_url)}", args.json, print_report)
    return code or (1 if report["failures"] else 0)


def show(found: dict[str, Any] | None, missing: str, as_json: bool, render: Callable[[dict[str, Any]], None]) -> int:
    """Print what a read found, as JSON or rendered; exit status 1 with ``missing`` if nothing."""
    if found is None:
        print(f"tower: {missing}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(found, default=str, indent=2))
    else:
        render(found)
    return 0


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from foundation.kafka import declared_topics, ensure_topics

    if args.action == "create":
        created = asyncio.run(ensure_topics(settings))
        print(f"created {len(created)} topic(s): {', '.join(created)}" if created else "all topics exist")
    else:
        for topic in declared_topics(settings):
            print(f"{topic.name:<32} partitions={topic.num_partitions} retention.ms={topic.topic_configs['retention.ms']}")
        print("replication: TOWER_REPLICATION_FACTOR, or what the cluster holds (3, or its broker count); "
              "min.insync.replicas: TOWER_MIN_INSYNC_REPLICAS, or 2 with three replicas, else 1")
    return 0


def cmd_schemas(args: argparse.Namespace, settings: Settings) -> int:
    from events.schemas import export_schemas

    for path in export_schemas(Path(args.directory)):
        print(path)
    return 0


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from store.migrate import migrate

    applied = query(settings, migrate)
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    return 0


# Wider than any table the commands print: piped, a table takes the width it needs.
PIPED_WIDTH = 1000


def rich_console() -> "Console":
    """Where rich tables go: the terminal, at its width; piped, as wide as a table needs, since
    a pipe has no width and rich's default of 80 columns would cut headers to "eff…"."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=PIPED_WIDTH)


def cmd_patterns(args: argparse.Namespace, settings: Settings) -> int:
    from rich.table import Table

    from director.learning import decision_posteriors, learning_parameters, recommend
    from director.modifiers import MODIFIERS
    from store.queries import pattern_table

    table = query(settings, pattern_table)
    contexts = sorted({context for context, _ in table if args.context is None or args.context in context})
    console = rich_console()
    if not contexts:
        console.print("no patterns learned yet" + (f" in contexts containing {args.context!r}" if args.context else ""))
        return 0
    for context in contexts:
        # The rows show the beliefs the advice ranks (borrowed priors, score precision), so the
        # advice's lower bound is its row's; n is the context's own scores.
        believed = decision_posteriors(table, context, list(MODIFIERS), learning_parameters(settings))
        advice = recommend(context, believed, list(MODIFIERS))
        view = Table(title=context, title_justify="left")
        for column in ("modifier", "mean", "95% lower bound", "n", "P(best)", ""):
            view.add_column(column, justify="left" if column in ("modifier", "") else "right", no_wrap=True)
        # Ranked as the advice ranks them (ties by name), so "best" heads the table.
        learned = sorted((modifier for c, modifier in table if c == context),
                         key=lambda m: (believed[m].lower_bound, m), reverse=True)
        for modifier in learned:
            mark = "best" if modifier == advice.best else ("stop" if modifier in advice.stop else "")
            view.add_row(modifier, f"{believed[modifier].mean:.3f}", lower_bound_text(believed[modifier]),
                         str(table[context, modifier].observations), f"{advice.probability_best.get(modifier, 0):.2f}", mark)
        console.print(view)
        stop = ", ".join(advice.stop) or "none"
        console.print(f"  use [bold]{advice.best}[/bold] (95% lower bound {lower_bound_text(believed[advice.best])}); "
                      f"stop using: {stop}")
    console.print("mean, 95% lower bound (the Beta posterior's 5% quantile): of the belief the refiner decides with, "
                  "the context's own scores plus what related contexts lend; n: the context's own scores.")
    return 0


def lower_bound_text(posterior: "Posterior") -> str:
    """One formatting of a lower bound for the table and the advice, so they cannot disagree."""
    return f"{posterior.lower_bound:.3f}"


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


def cmd_trends(args: argparse.Namespace, settings: Settings) -> int:
    from rich.table import Table

    from store.queries import quality_trends, regression_alerts

    async def read(conn: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return (await quality_trends(conn, by=args.by, days=args.days, bucket=args.bucket),
                await regression_alerts(conn))

    rows, alerts = query(settings, read)
    if args.json:
        print(json.dumps({"rows": rows, "alerts": alerts}, default=str, indent=2))
        return 0
    console = rich_console()
    view = Table(title=f"quality per {args.bucket}" + ("" if args.by == "day" else f" and {args.by}")
                 + f", last {args.days} days", title_justify="left")
    for column in ("from", args.by if args.by != "day" else "", "attempts", "mean score", "pass rate", "failed"):
        if column or args.by != "day":
            view.add_column(column, no_wrap=column != args.by,
                            justify="right" if column in ("attempts", "mean score", "pass rate", "failed") else "left")
    for r in rows:
        cells = [f"{r['bucket_start']:%Y-%m-%d %H:%M}"] + ([r["key"]] if args.by != "day" else [])
        cells += [str(r["attempts"]), "-" if r["mean_score"] is None else f"{r['mean_score']:.3f}",
                  f"{r['pass_rate']:.0%}", str(r["failed"])]
        view.add_row(*cells)
    console.print(view if rows else f"no scores in the last {args.days} days")
    for alert in alerts:
        console.print(f"[bold red]REGRESSION[/bold red] {alert['detected_at']:%Y-%m-%d %H:%M}: {alert['reason']}")
    if args.plot is not None:
        plot_trends(rows, args.plot, title=f"Mean score per {args.bucket}, by {args.by}")
        console.print(f"plot: {args.plot}")
    return 0


def plot_trends(rows: list[dict[str, Any]], path: Path, *, title: str) -> None:
    """Mean score over time, one line per key, into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, list[tuple[datetime, float]]] = {}
    for r in rows:
        if r["mean_score"] is not None:
            lines.setdefault(r["key"], []).append((r["bucket_start"], r["mean_score"]))
    figure, axes = plt.subplots(figsize=(9, 4.5), dpi=110)
    for key, points in sorted(lines.items()):
        axes.plot([t for t, _ in points], [v for _, v in points], marker="o", label=key if key != "all" else "all scenes")
    times = sorted({t for points in lines.values() for t, _ in points})
    if len(times) == 1:  # one bucket: a readable span around it, not matplotlib's years
        from datetime import timedelta

        axes.set_xlim(times[0] - timedelta(hours=12), times[0] + timedelta(hours=12))
    axes.set_ylim(0, 1)
    axes.set_ylabel("mean composite score")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if lines:
        axes.legend(fontsize=7, loc="lower left")
    figure.autofmt_xdate()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def cmd_submit_file(args: argparse.Namespace, settings: Settings) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from api.models import IntegrateRequest
    from eventlog.follow import new_scene_id, produce, scene_envelope
    from foundation.kafka import ensure_topics
    from store.projections import record_batch
    from store.queries import batch_progress, scene_exists

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
        scenes.append(SceneRequested(
            scene_id=body.scene_id or new_scene_id(), session_id=session_id, description=body.scene_description,
            characters=list(body.characters), style=body.style, max_attempts=body.max_attempts,
            quality_threshold=body.quality_threshold, target_duration_s=body.target_duration_s,
            character_sheets=body.character_sheets, batch_id=batch_id, batch_size=len(lines)))
    if not scenes:
        raise ValueError(f"{args.file} has no scenes (one JSON object per line)")

    async def run() -> int:
        await ensure_topics(settings)
        conn = await connect(settings)
        try:
            taken = [s.scene_id for s in scenes if await scene_exists(conn, s.scene_id)]
            if taken:
                raise ValueError(f"scene id(s) exist already: {', '.join(taken[:10])}; scene ids must be unique")
            await record_batch(conn, batch_id, len(scenes), datetime.now(UTC))
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


def parse_time(option: str, text: str | None) -> datetime | None:
    """An ISO time from the command line (``Z`` accepted); a naive one is taken as UTC."""
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{option}: {text!r} is not an ISO time (e.g. 2026-12-01T18:00Z)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from eventlog.replay import replay
    from store.pool import create_database

    since = parse_time("--since", args.since)
    group = args.group or f"{settings.group_prefix}-replay-{int(time.time())}"

    async def run() -> int:
        if args.create:
            server, _, name = args.database_url.rpartition("/")
            try:
                await create_database(f"{server}/postgres", name.split("?")[0])
            except asyncpg.DuplicateDatabaseError:
                pass
        columns = (TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                   TextColumn("{task.fields[rate]:,.0f} events/s"), TimeElapsedColumn())
        bar = Progress(*columns)
        task = bar.add_task("replay", total=None, rate=0.0)
        started = time.monotonic()

        def show(done: int, total: int) -> None:
            bar.start()  # once the database and the topics are there (a no-op after the first)
            bar.update(task, completed=done, total=total, rate=done / max(time.monotonic() - started, 1e-9))

        try:
            result = await replay(settings, args.database_url, group=group, since=since, progress=show)
        finally:
            bar.stop()
        print(f"replayed {result.events} events ({result.applied} applied, {result.events - result.applied - result.skipped} "
              f"already there, {result.skipped} malformed skipped) in {result.seconds:.1f} s, {result.rate:,.0f} events/s, "
              f"consumer group {group}")
        print(f"pattern table sha256 {result.table_sha256}")
        return 0

    return asyncio.run(run())


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from director.evaluation import evaluate_all, logged_mean, standard_policies
    from director.modifiers import MODIFIERS
    from store.queries import logged_first_attempts

    since = parse_time("--since", args.since)
    decisions = query(settings, lambda conn: logged_first_attempts(conn, context=args.context, since=since))
    if not decisions:
        print("tower: no scored first attempts match; run some scenes first (or widen --context/--since)", file=sys.stderr)
        return 1
    estimates = sorted(evaluate_all(decisions, standard_policies(list(MODIFIERS))), key=lambda e: -e.snips if e.snips == e.snips else 1.0)
    logged = logged_mean(decisions)
    contexts = len({d.context for d in decisions})
    if args.json:
        def finite(value: Any) -> Any:  # JSON has no NaN: a policy with no estimate is null
            if isinstance(value, tuple):
                return [finite(v) for v in value]
            return None if isinstance(value, float) and value != value else value

        rows = [{k: finite(v) for k, v in e.__dict__.items()} for e in estimates]
        print(json.dumps({"decisions": len(decisions), "contexts": contexts, "logged_mean": logged,
                          "estimates": rows}, indent=2))
        return 0
    from rich.table import Table

    table = Table(title=f"{len(decisions)} scored first attempts in {contexts} contexts; "
                  f"Thompson sampling (logged) scored {logged:.3f}", title_justify="left")
    table.add_column("policy", no_wrap=True)
    for column in ("SNIPS [95%]", "IPS [95%]", "eff. n", "matched"):
        table.add_column(column, justify="right", no_wrap=True)
    for e in estimates:
        table.add_row(e.policy, f"{e.snips:.3f} [{e.snips_interval[0]:.3f}, {e.snips_interval[1]:.3f}]",
                      f"{e.ips:.3f} [{e.ips_interval[0]:.3f}, {e.ips_interval[1]:.3f}]",
                      f"{e.effective_sample_size:.1f}", str(e.matched))
    console = rich_console()
    console.print(table)
    console.print("eff. n: how many decisions an estimate rests on (a small one: a wide, unreliable interval); "
                  "matched: decisions where the policy agrees with the log.")
    return 0


def query(settings: Settings, read: Callable[[Any], Awaitable[T]]) -> T:
    """Run one database read (or migration) on a fresh connection."""

    async def run() -> T:
        conn = await connect(settings)
        try:
            return await read(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from eventlog.dlq import read_letters, redrive, select
    from events.topics import BY_NAME, TOPICS

    words = list(args.words)
    redriving = bool(words) and words[0] == "redrive"
    if redriving:
        words.pop(0)
    if len(words) > 1 or (words and words[0] not in BY_NAME):
        print(f"tower: no topic {' '.join(words)!r}; topics: {', '.join(t.name for t in TOPICS)}", file=sys.stderr)
        return 2
    names = words or [t.name for t in TOPICS]

    async def show() -> int:
        total = 0
        for name in names:
            letters = await read_letters(settings, name)
            total += len(letters)
            print(f"{settings.topic(name)}.dlq: {len(letters)} dead letter(s)")
            for letter in letters[-args.limit:]:
                h, record = letter.headers, letter.record
                key = record.key.decode(errors="replace") if record.key else "-"
                print(f"  @{record.offset} {h.get('dlq_failed_at', '?')}  key={key}  from {h.get('dlq_original_topic')}"
                      f"[{h.get('dlq_original_partition')}]@{h.get('dlq_original_offset')} by {h.get('dlq_consumer')}")
                print(f"    {h.get('dlq_error_class')}: {h.get('dlq_error_message')}")
        return 1 if total else 0

    async def redrive_letters() -> int:
        ids, offsets = set(args.id), set(args.offset)
        outcomes = []
        for name in names:
            outcomes += await redrive(settings, select(await read_letters(settings, name), ids=ids, offsets=offsets))
        for letter, outcome in outcomes:
            print(f"{letter.record.topic}@{letter.record.offset} ({letter.headers.get('ce_id', 'no id')}): {outcome}")
        if not outcomes:
            print("nothing to redrive")
        return 1 if any(outcome.startswith("skipped") for _, outcome in outcomes) else 0

    return asyncio.run(redrive_letters() if redriving else show())


def cmd_settings(args: argparse.Namespace, settings: Settings) -> int:
    for name, value in settings.model_dump().items():
        if name == "database_url":
            value = mask_password(value)
        if isinstance(value, list):
            value = ",".join(map(str, value))
        print(f"TOWER_{name.upper()}={'' if value is None else value}")
    return 0



