"""The CLI answers bad input with one line and exit 2, never a traceback; secrets stay masked."""

from __future__ import annotations

import pytest

from tower.cli import main
from tower.settings import mask_password


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
    from tower.settings import get_settings

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

    from tower.settings import Settings

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
