"""The ``tower`` Typer app and what its commands share: running a command's implementation with the
settings in force, one-line errors, database reads, tables."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import typer
from pydantic import ValidationError
from typer.exceptions import TyperException

from eventlog.follow import SceneFailed
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


def run_command(command: Callable[[argparse.Namespace, Settings], int], **params: Any) -> None:
    """Run a command's implementation with the settings in force; a non-zero result is the exit code."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    code = command(argparse.Namespace(**params), settings)
    if code:
        raise typer.Exit(code)


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
                "characters": "--characters", "scene_id": "--scene-id", "session_id": "--session", "style": "--style",
                "max_render_seconds": "--max-render-seconds"}


def describe_invalid(exc: ValidationError) -> str:
    """One line naming each invalid option and what is wrong with it."""
    problems = []
    for error in exc.errors(include_url=False)[:3]:
        field = str(error["loc"][0]) if error["loc"] else ""
        message = error["msg"]
        problems.append(f"{OPTION_NAMES.get(field, field or 'input')}: {message[:1].lower()}{message[1:]}")
    return "invalid input: " + "; ".join(problems) + " (see --help)"


async def connect(settings: Settings):  # noqa: ANN201 - asyncpg.Connection, imported lazily
    import asyncpg

    try:
        return await asyncpg.connect(settings.database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ConnectionError(
            f"cannot connect to PostgreSQL at {mask_password(settings.database_url)!r}: {exc}. Start it with "
            "`make services` or set TOWER_DATABASE_URL."
        ) from exc


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


# Wider than any table the commands print: piped, a table takes the width it needs.
PIPED_WIDTH = 1000


def rich_console() -> "Console":
    """Where rich tables go: the terminal, at its width; piped, as wide as a table needs, since
    a pipe has no width and rich's default of 80 columns would cut headers to "eff…"."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=PIPED_WIDTH)


def query(settings: Settings, read: Callable[[Any], Awaitable[T]]) -> T:
    """Run one database read (or migration) on a fresh connection."""

    async def run() -> T:
        conn = await connect(settings)
        try:
            return await read(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


def lower_bound_text(posterior: "Posterior") -> str:
    """One formatting of a lower bound for the table and the advice, so they cannot disagree."""
    return f"{posterior.lower_bound:.3f}"
