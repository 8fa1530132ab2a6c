"""Learning commands: ``tower patterns``, ``tower trends``, ``tower evaluate``, ``tower replay``,
``tower memory search`` and ``tower memory reembed``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import asyncpg
import typer

from foundation.settings import Settings
from tower.cli.app import app, lower_bound_text, query, rich_console, run_command

TrendsBy = Enum("TrendsBy", {"day": "day", "pattern": "pattern", "workflow": "workflow"}, type=str)


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


memory_app = typer.Typer(help="The memory of past attempts: search it, or fill in a server embedder's vectors.",
                         no_args_is_help=True)
app.add_typer(memory_app, name="memory")


@memory_app.command("search", help='`tower memory search "a duel at dawn"` lists the attempts whose plan reads most '
                    "like the text (TOWER_MEMORY_EMBEDDER's vectors), with their scene, shot, score and similarity.")
def memory_search(
    text: Annotated[str, typer.Argument(metavar="TEXT", help="what to look for, in words")],
    limit: Annotated[int, typer.Option(help="hits to show, best first", min=1, max=100)] = 10,
    json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    run_command(cmd_memory_search, text=text, limit=limit, json=json_)


@memory_app.command("reembed", help="Embed every remembered attempt the server embedder (TOWER_MEMORY_EMBEDDER="
                    "server, TOWER_EMBEDDINGS_URL) has no vector for yet, from the remembered texts, with progress: "
                    "after switching embedders or models, a `tower replay`, or the server being down. Safe to run again.")
def memory_reembed(
    batch: Annotated[int, typer.Option(help="texts per request to the embedding server", min=1, max=2048)] = 64,
) -> None:
    run_command(cmd_memory_reembed, batch=batch)


def cmd_memory_search(args: argparse.Namespace, settings: Settings) -> int:
    from director.embedding_server import EmbedderUnavailable
    from director.memory import embedder_key
    from store.memory import configured_embedder, load
    from store.migrate import migrate

    async def read(conn):  # noqa: ANN001, ANN202 - asyncpg.Connection -> (key, Memories, query vector)
        await migrate(conn)  # a database no worker has used yet has an empty memory, not none
        embedder = await configured_embedder(settings)
        [vector] = await embedder.embed([args.text])
        return embedder_key(embedder), await load(conn, embedder_key(embedder)), vector

    try:
        key, memories, vector = query(settings, read)
    except EmbedderUnavailable as exc:
        print(f"tower: the memory's embedder is unavailable: {exc}", file=sys.stderr)
        return 1
    hits = [{**{k: memories.rows[h.index][k] for k in ("scene_id", "shot_number", "attempt", "composite", "passed",
                                                         "modifier", "text", "frame_uri")},
             "similarity": round(h.similarity, 4)} for h in memories.search(vector, args.limit)]
    if args.json:
        print(json.dumps({"query": args.text, "embedder": key, "searched": len(memories.rows), "hits": hits},
                         indent=2))
        return 0
    if not hits:
        print(f"tower: nothing remembered yet ({key}): attempts are remembered once scored"
              + ("; `tower memory reembed` embeds them with the server" if settings.memory_embedder == "server" else ""),
              file=sys.stderr)
        return 1
    print(f"{len(hits)} of {len(memories.rows)} remembered attempts, most like {args.text!r}:")
    for h in hits:
        verdict = "passed" if h["passed"] else "under threshold"
        print(f"  {h['similarity']:.3f}  {h['scene_id']} shot {h['shot_number']} attempt {h['attempt']}  "
              f"{h['composite']:.3f} {verdict}  {h['modifier']}  {h['text'][:90]}")
    return 0


def cmd_memory_reembed(args: argparse.Namespace, settings: Settings) -> int:
    from director.embedding_server import EmbedderUnavailable
    from director.memory import embedder_key
    from store.memory import configured_embedder, embed_missing
    from store.migrate import migrate

    if settings.memory_embedder != "server":
        print("tower: TOWER_MEMORY_EMBEDDER is built-in, whose vectors the learner writes as it remembers; set it "
              "to `server` (and TOWER_EMBEDDINGS_URL) to embed the memory with a server", file=sys.stderr)
        return 2
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        rate = done / max(time.monotonic() - started, 1e-9)
        print(f"  {done}/{total} embedded ({rate:.0f}/s)", file=sys.stderr)

    async def fill(conn):  # noqa: ANN001, ANN202 - asyncpg.Connection -> (key, rows added)
        await migrate(conn)
        embedder = await configured_embedder(settings)
        return embedder_key(embedder), await embed_missing(conn, embedder, batch=args.batch, progress=progress)

    try:
        key, added = query(settings, fill)
    except EmbedderUnavailable as exc:
        print(f"tower: stopped: {exc}; what was embedded is kept, run it again to go on", file=sys.stderr)
        return 1
    print(f"{added} remembered attempt(s) embedded with {key} in {time.monotonic() - started:.1f} s")
    return 0


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
