"""``tower``: run workers, submit and follow scenes, inspect results, manage topics and schemas."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from pydantic import ValidationError

from agents.registry import STAGE_NAMES
from director.learning import Posterior
from events.models import SceneRequested
from tower.follow import SceneFailed
from tower.logs import configure_logging
from tower.settings import Settings, get_settings, mask_password

T = TypeVar("T")



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tower",
        description="Tower: an event-driven anime production director on Kafka. "
        "Settings come from TOWER_* environment variables (see `tower settings`).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = sub.add_parser("worker", help="run a stage's Faust worker (or all of them)")
    worker.add_argument("stage", choices=(*STAGE_NAMES, "all"), help="the stage to run; `all` runs the five in this process (development)")

    api = sub.add_parser("api", help="serve the HTTP API (and /docs) on TOWER_API_HOST:TOWER_API_PORT")
    api.add_argument("--host", default=None, help="bind address (default: TOWER_API_HOST, 127.0.0.1)")
    api.add_argument("--port", type=int, default=None, help="port (default: TOWER_API_PORT, 8328)")

    submit = sub.add_parser("submit", help="request a scene (produces scene.requested)")
    submit.add_argument("description", help='e.g. "Create a scene where Kai fights the dragon" (1-2000 characters)')
    submit.add_argument("--characters", default="", help="comma-separated names, e.g. Kai,Dragon")
    submit.add_argument("--session", default=None, help="creative session id (default: a new one)")
    submit.add_argument("--scene-id", default=None, help="scene id (default: a new one)")
    submit.add_argument("--style", default="anime")
    submit.add_argument("--max-attempts", type=int, default=None, help="attempt budget per shot, 1-10 (default: the planner's TOWER_MAX_ATTEMPTS)")
    submit.add_argument("--threshold", type=float, default=None, help="retry under this composite score, 0-1 (default: the planner's TOWER_QUALITY_THRESHOLD)")
    submit.add_argument("--duration", type=float, default=None,
                        help="scene length in seconds, 1-300: the planned shots sum to it (default: as the text needs)")
    submit.add_argument("--follow", action="store_true", help="show progress, then the plan, scores and pattern updates")
    submit.add_argument("--timeout", type=float, default=600.0, help="seconds --follow waits (default 600)")

    status = sub.add_parser("status", help="a scene's plan, attempts and scores from PostgreSQL")
    status.add_argument("scene_id")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    topics = sub.add_parser("topics", help="Kafka topics")
    topics.add_argument("action", choices=("create", "list"), help="create the declared topics / list them")

    schemas = sub.add_parser("schemas", help="event JSON Schemas")
    schemas.add_argument("action", choices=("export",))
    schemas.add_argument("directory", nargs="?", default="schemas", help="output folder (default: schemas/)")

    db = sub.add_parser("db", help="PostgreSQL")
    db.add_argument("action", choices=("migrate",))

    dlq = sub.add_parser(
        "dlq", help="show dead letters (what failed, where it came from, why), or redrive them",
        description="`tower dlq [TOPIC]` lists dead letters (exit 1 if there are any); `tower dlq redrive "
        "[TOPIC] [--id CE_ID ...] [--offset N ...]` re-publishes them to their original topic once their "
        "cause is fixed (all of the topic's when no --id or --offset is given).",
    )
    dlq.add_argument("words", nargs="*", metavar="[redrive] [TOPIC]",
                     help="a pipeline topic, e.g. shot.planned (default: all); `redrive` first to re-publish")
    dlq.add_argument("--limit", type=int, default=20, help="newest N per topic (default 20)")
    dlq.add_argument("--id", action="append", default=[], help="redrive the letter of this event id (ce_id)")
    dlq.add_argument("--offset", type=int, action="append", default=[],
                     help="redrive the letter at this offset of the dead-letter topic")

    sub.add_parser("patterns", help="the learned pattern table (posterior mean, lower bound, count)")

    replay = sub.add_parser(
        "replay", help="rebuild the pattern table from quality.scored and feedback.submitted into a database",
        description="Reads the learner's evidence from the log (from the beginning, or --since) up to its end when the "
        "replay starts, under its own consumer group, and applies it as the learner does, without re-issuing retries. "
        "The same log gives the same table, byte for byte: compare the printed sha256.",
    )
    replay.add_argument("--database-url", required=True,
                        help="the PostgreSQL database to rebuild into (migrated first; an empty one rebuilds from scratch), "
                        "e.g. postgresql://tower@127.0.0.1:5433/tower_replay")
    replay.add_argument("--create", action="store_true", help="create the database first if it does not exist")
    replay.add_argument("--since", default=None, help="start at the first event at or after this ISO time (default: the beginning)")
    replay.add_argument("--group", default=None, help="consumer group (default: TOWER_GROUP_PREFIX-replay-<unix time>)")

    evaluate = sub.add_parser(
        "evaluate", help="estimate how other prompt policies would have scored, from the logged first attempts",
        description="Off-policy evaluation: reweights every scored first attempt by the target policy's probability "
        "of its modifier over the logged one (IPS, and self-normalised SNIPS), with 95%% intervals. Policies: each "
        "fixed modifier, uniform random, greedy by posterior mean (judged progressively), beside what the logging "
        "policy (Thompson sampling) actually scored.",
    )
    evaluate.add_argument("--context", default=None, help="only contexts containing this text, e.g. close-up or procedural-v1")
    evaluate.add_argument("--since", default=None, help="only attempts scored at or after this ISO time, e.g. 2026-12-01T18:00Z")
    evaluate.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("settings", help="print the settings in force")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        return COMMANDS[args.command](args, settings)
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
    from tower.follow import describe, end_offsets, follow_scene, new_scene_id, produce, scene_envelope, worth_showing

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
    )

    async def run() -> int:
        from tower.kafka import ensure_topics

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
    for u in report["pattern_updates"]:
        post = Posterior(u["alpha_micros"], u["beta_micros"], u["observations"])
        print(
            f"  {u['context']:<48} {u['modifier']:<18} reward {u['reward']:.3f} -> mean {post.mean:.3f} "
            f"(lower {post.lower_bound:.3f}, n={post.observations})"
        )


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from store.queries import scene_report

    report = query(settings, lambda conn: scene_report(conn, args.scene_id))
    if report is None:
        print(f"tower: no scene {args.scene_id!r} in {settings.database_url}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, default=str, indent=2))
    else:
        print_report(report)
    return 1 if report["failures"] else 0


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from tower.kafka import declared_topics, ensure_topics

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


def cmd_patterns(args: argparse.Namespace, settings: Settings) -> int:
    from store.queries import pattern_table

    table = query(settings, pattern_table)
    print(f"{'context':<48} {'modifier':<18} {'mean':>6} {'lower':>6} {'n':>4}")
    for (context, modifier), post in sorted(table.items(), key=lambda kv: -kv[1].mean):
        print(f"{context:<48} {modifier:<18} {post.mean:>6.3f} {post.lower_bound:>6.3f} {post.observations:>4}")
    return 0


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

    from store.pool import create_database
    from tower.replay import replay

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
    from rich.console import Console
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
    console = Console()
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
    from events.topics import BY_NAME, TOPICS
    from tower.dlq import read_letters, redrive, select

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



COMMANDS = {
    "worker": cmd_worker,
    "api": cmd_api,
    "submit": cmd_submit,
    "status": cmd_status,
    "topics": cmd_topics,
    "schemas": cmd_schemas,
    "db": cmd_db,
    "patterns": cmd_patterns,
    "evaluate": cmd_evaluate,
    "replay": cmd_replay,
    "dlq": cmd_dlq,
    "settings": cmd_settings,
}

__all__ = ["build_parser", "main"]
