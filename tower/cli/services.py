"""Running and operating Tower: ``tower worker``, ``tower api``, ``tower topics``, ``tower schemas``,
``tower db``, ``tower dlq``, ``tower settings``, ``tower models``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from agents.registry import STAGE_NAMES
from foundation.settings import Settings, mask_password
from tower.cli.app import app, query, run_command

StageName = Enum("StageName", {name: name for name in (*STAGE_NAMES, "all")}, type=str)


TopicsAction = Enum("TopicsAction", {"create": "create", "list": "list"}, type=str)


@app.command(help="Run a stage's Faust worker, or all seven in this process (`all`, for development).")
def worker(stage: Annotated[StageName, typer.Argument(metavar="STAGE", help="planner, refiner, renderer, scorer, learner, retrier, editor, or all")]) -> None:
    run_command(cmd_worker, stage=stage.value)


@app.command(help="Serve the HTTP API (and /docs) on TOWER_API_HOST:TOWER_API_PORT.")
def api(
    host: Annotated[Optional[str], typer.Option(help="bind address (default: TOWER_API_HOST, 127.0.0.1)")] = None,
    port: Annotated[Optional[int], typer.Option(help="port (default: TOWER_API_PORT, 8328)")] = None,
) -> None:
    run_command(cmd_api, host=host, port=port)


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


@app.command(help="Which render presets each ComfyUI server (TOWER_COMFY_URLS) can run, and exactly which model "
             "files are missing where, with where to download them. Exit 1 if a server does not answer or the "
             "preset in TOWER_RENDER_PRESET can run on none.")
def models(
    json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for each server", min=0.1)] = 5.0,
) -> None:
    run_command(cmd_models, json=json_, timeout=timeout)


@app.command(help="Print the settings in force (passwords masked).")
def settings() -> None:
    run_command(cmd_settings)


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


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from comfy.presets import PRESETS, preset, unknown_roles
    from comfy.survey import survey

    if settings.render_preset:
        preset(settings.render_preset)  # an unknown name: one line naming the choices
    urls = [url.strip() for url in settings.comfy_urls.split(",") if url.strip()]
    surveys = asyncio.run(survey(urls, settings.comfy_models, timeout_s=args.timeout))
    chosen = settings.render_preset
    runnable = chosen is None or any(s.ready(chosen) for s in surveys)
    dead = [s for s in surveys if s.error is not None]
    if args.json:
        print(json.dumps({"preset": chosen, "preset_runnable": runnable if chosen else None,
                          "unknown_roles": unknown_roles(settings.comfy_models),
                          "servers": [s.as_dict() for s in surveys]}, indent=2))
        return 1 if dead or not runnable else 0
    for role in unknown_roles(settings.comfy_models):
        print(f"warning: TOWER_COMFY_MODELS names {role!r}, which no preset loads", file=sys.stderr)
    width = max(map(len, PRESETS))
    for result in surveys:
        if result.error is not None:
            print(f"{result.url}: not answering: {result.error}")
            continue
        print(f"{result.url}:")
        for name, files in result.missing.items():
            mark = " (TOWER_RENDER_PRESET)" if name == chosen else ""
            if not files:
                extra = " (needs <character>.png in TOWER_COMFY_REFERENCES_DIR)" if PRESETS[name].needs_reference else ""
                print(f"  {name:<{width}}  ready{extra}{mark}")
                continue
            print(f"  {name:<{width}}  missing {len(files)} file(s){mark}:")
            for f in files:
                size = f", {f.size_bytes / 1e9:.1f} GB" if f.size_bytes else ""
                source = f"download {f.url}" if f.url else "your own file (TOWER_COMFY_MODELS)"
                print(f"  {'':<{width}}    models/{f.path}  <- {source}{size}")
    if chosen and not runnable:
        print(f"tower: preset {chosen} can run on none of {len(urls)} server(s): put the missing files in place",
              file=sys.stderr)
    return 1 if dead or not runnable else 0
