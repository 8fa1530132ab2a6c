"""First-run set-up under concurrency and interruption (infra/setup, infra/lib/once.sh).

A small real environment: ``infra/setup python-env`` creates a venv in an empty folder and installs a
one-module wheel this test writes, offline (``--no-index``), so the test needs no network and takes
seconds. Every Tower set-up step (the venvs, ComfyUI's, llama.cpp's, the Kafka jars, the PostgreSQL
cluster, the panel) goes through the same ``once``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SETUP = Path(__file__).resolve().parents[2] / "infra" / "setup"
WAIT_S = 60


def _write_wheel(folder: Path) -> Path:
    """A minimal valid wheel of a module ``tinypkg`` (pip checks RECORD's hashes)."""
    files = {
        "tinypkg/__init__.py": b"VALUE = 42\n",
        "tinypkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
        "tinypkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: tower-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("tinypkg-1.0.dist-info/RECORD,,")
    files["tinypkg-1.0.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "tinypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel


@pytest.fixture
def environment(tmp_path: Path) -> tuple[list[str], Path, dict[str, str]]:
    wheels = _write_wheel(tmp_path / "wheels").parent
    target = tmp_path / "cache" / "small-venv"
    command = [str(SETUP), "python-env", "--keep-pip", str(target), "--",
               "--no-index", "--find-links", str(wheels), "tinypkg"]
    env = {**os.environ, "TOWER_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("PYTHONPATH", None)
    return command, target, env


def _wait_for(predicate, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the set-up exited ({proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {WAIT_S} s")
        time.sleep(0.02)


def _imports_tinypkg(target: Path) -> bool:
    result = subprocess.run([str(target / "bin" / "python"), "-c", "import tinypkg; assert tinypkg.VALUE == 42"],
                            capture_output=True)
    return result.returncode == 0


def test_two_first_runs_at_once_build_once(environment) -> None:
    command, target, env = environment
    first = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    # The second starts while the first is building: the marker exists only during a build.
    _wait_for(lambda: Path(f"{target}.incomplete").exists(), "the first set-up started building", first)
    second = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    outputs = []
    for proc in (first, second):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        outputs.append(err)
    builds = sum(out.count(": building ") for out in outputs)
    assert builds == 1, f"expected one build between the two runs, got {builds}:\n" + "\n---\n".join(outputs)
    assert "waiting for another set-up" in outputs[1], outputs[1]
    assert "set up meanwhile by another run" in outputs[1], outputs[1]
    assert Path(f"{target}.complete").exists() and not Path(f"{target}.incomplete").exists()
    assert _imports_tinypkg(target)

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "building" not in again.stderr, again.stderr


def test_an_interrupted_set_up_is_rebuilt_not_reused(environment) -> None:
    command, target, env = environment
    victim = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    # Killed once the venv exists but before the set-up finished: a half-built environment.
    _wait_for(lambda: (target / "bin" / "python").exists(), "the venv appeared", victim)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert Path(f"{target}.incomplete").exists(), "a killed set-up must leave its marker"
    assert not Path(f"{target}.complete").exists(), "a killed set-up must not be marked complete"

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "was interrupted; rebuilding it from scratch" in rerun.stderr, rerun.stderr
    assert Path(f"{target}.complete").exists() and not Path(f"{target}.incomplete").exists()
    assert _imports_tinypkg(target)


def test_a_failed_set_up_is_not_marked_complete(environment, tmp_path: Path) -> None:
    command, target, env = environment
    missing = [*command[:-1], "no-such-package-anywhere"]
    failed = subprocess.run(missing, env=env, capture_output=True, text=True, timeout=300)
    assert failed.returncode != 0
    assert "set-up failed" in failed.stderr, failed.stderr
    assert not Path(f"{target}.complete").exists()

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "rebuilding it from scratch" in rerun.stderr, rerun.stderr
    assert _imports_tinypkg(target)
