"""The CLI answers bad input with one line and exit 2, never a traceback; secrets stay masked."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from foundation.settings import mask_password
from tower.cli import main


@pytest.mark.parametrize(("argv", "says"), [
    (["submit", ""], "the description"),
    (["submit", "   "], "the description"),
    (["submit", "x" * 2001], "at most 2000 characters"),
    (["submit", "Kai fights", "--max-attempts", "0"], "--max-attempts"),
    (["submit", "Kai fights", "--threshold", "1.5"], "--threshold"),
    (["submit", "Kai fights", "--scene-id", "no spaces allowed"], "--scene-id"),
])
def test_bad_submit_input_is_one_line_and_exit_2(argv, says, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tower: invalid input: ") and says in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_settings_mask_the_database_password_and_the_token(monkeypatch, capsys):
    from foundation.settings import get_settings

    monkeypatch.setenv("TOWER_DATABASE_URL", "postgresql://tower:hunter2@db.example:5432/tower")
    monkeypatch.setenv("TOWER_API_TOKEN", "t0ken-value")
    get_settings.cache_clear()
    try:
        assert main(["settings"]) == 0
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr().out
    assert "hunter2" not in out and "t0ken-value" not in out
    assert "TOWER_DATABASE_URL=postgresql://tower:***@db.example:5432/tower" in out
    assert mask_password("postgresql://u@h/db") == "postgresql://u@h/db"


def test_the_readme_documents_every_setting():
    from pathlib import Path

    from foundation.settings import Settings

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"`TOWER_{name.upper()}`" not in readme]
    assert not missing, f"settings missing from the README's table: {missing}"


def test_help_lists_every_command(capsys):
    from tower.cli import app

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    names = [command.name or command.callback.__name__ for command in app.registered_commands]
    assert names and all(f"  {name} " in out for name in names)


@pytest.mark.parametrize(("argv", "says"), [
    (["submit"], "give a scene description, or --file"),
    (["submit", "Kai", "--file", "x.jsonl"], "not both"),
    (["submit", "Kai", "--max-attempts", "many"], "--max-attempts"),
    (["submit", "Kai", "--preset", "anime-sd3"], "unknown preset 'anime-sd3'; choose one of anime-sd15"),
    (["worker", "painter"], "not one of"),
    (["trends", "--by", "colour"], "--by"),
    (["no-such-command"], "No such command"),
])
def test_usage_errors_are_one_line_and_exit_2(argv, says, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tower: ") and says in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_bad_line_of_a_batch_file_is_named_before_anything_is_sent(tmp_path, capsys):
    scenes = tmp_path / "scenes.jsonl"
    scenes.write_text('{"scene_description": "Kai runs"}\n\n{"scene_description": "   "}\n')
    assert main(["submit", "--file", str(scenes)]) == 2
    err = capsys.readouterr().err
    assert f"{scenes}:3: " in err and "scene_description" in err
    scenes.write_text('["not", "an object"]\n')
    assert main(["submit", "--file", str(scenes)]) == 2
    assert f"{scenes}:1: not a JSON object" in capsys.readouterr().err


CONTEXT = "close-up|tense|low-key|sdxl-anime-v2"
NEIGHBOUR = "close-up|calm|daylight|sdxl-anime-v2"  # related: the same camera angle and workflow


def learned_table():
    """Steady scores (score precision above 1) in CONTEXT and a related context that lends a
    prior: the beliefs the advice ranks differ from the context's own posteriors."""
    from director.learning import Posterior

    table = {}
    for n in range(24):
        for context, modifier, base in ((CONTEXT, "clean-cel", 0.80), (CONTEXT, "dynamic-action", 0.62),
                                        (NEIGHBOUR, "clean-cel", 0.90)):
            table[context, modifier] = table.get((context, modifier), Posterior()).updated(base + 0.02 * (n % 3))
    return table


def fake_reads(monkeypatch, result):
    """The commands read ``result`` instead of the database."""
    import tower.cli

    for group in (tower.cli.scenes, tower.cli.learning, tower.cli.services):
        monkeypatch.setattr(group, "query", lambda settings, read: result)


def test_patterns_table_and_advice_show_the_same_lower_bound(monkeypatch, capsys):
    import re

    table = learned_table()
    fake_reads(monkeypatch, table)
    assert main(["patterns", "--context", CONTEXT]) == 0
    out = capsys.readouterr().out
    best_row = next(line for line in out.splitlines() if line.rstrip(" │").endswith("best"))
    cells = [cell.strip() for cell in best_row.strip("│ ").split("│")]
    advice = re.search(r"use (\S+) \(95% lower bound ([0-9.]+)\)", out)
    assert advice and cells[0] == advice[1] == "clean-cel"
    assert cells[2] == advice[2]
    # The case the issue saw: the context's own posterior has another bound than the belief.
    assert f"{table[CONTEXT, 'clean-cel'].lower_bound:.3f}" != advice[2]


def logged_decisions():
    from director.evaluation import LoggedDecision
    from director.modifiers import MODIFIERS

    return [LoggedDecision(CONTEXT, modifier, 1 / len(MODIFIERS), 0.7) for modifier in MODIFIERS] * 4


def trend_rows():
    return [{"bucket_start": SOME_TIME, "key": f"{CONTEXT}|painterly-detail", "attempts": 12, "mean_score": 0.71,
             "pass_rate": 0.5, "failed": 0}], []


def session_scenes():
    scene = {"requested_at": SOME_TIME, "scene_id": "scene-with-a-rather-long-identifier", "status": "completed",
             "shot_count": 3, "passed_shots": 3, "mean_best_score": 0.8, "description": "Kai fights the dragon " * 3}
    return {"session_id": "s-1", "scene_count": 1, "created_at": SOME_TIME, "scenes": [scene]}


SOME_TIME = datetime(2025, 1, 2, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize(("argv", "reads"), [
    (["patterns"], learned_table),
    (["evaluate"], logged_decisions),
    (["trends", "--by", "pattern"], trend_rows),
    (["history", "s-1"], session_scenes),
])
def test_piped_tables_keep_their_full_headers(argv, reads, monkeypatch, capsys):
    """Piped output has no terminal width: at rich's default of 80 columns, `tower evaluate` cut
    "eff. n" to "eff…"."""
    fake_reads(monkeypatch, reads())
    monkeypatch.setenv("COLUMNS", "80")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "┃" in out and "…" not in out
