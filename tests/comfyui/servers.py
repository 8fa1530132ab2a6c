"""Real ComfyUI servers for tests, run by infra/comfyui/comfyctl: one port each, the test nodes of
``custom_nodes/`` linked in, state under ``TOWER_COMFY_DATA/<port>``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMFYCTL = REPO / "infra" / "comfyui" / "comfyctl"
TEST_NODES = Path(__file__).with_name("custom_nodes")
BASE_PORT = int(os.environ.get("TOWER_COMFY_PORT", "8188"))
DATA_ROOT = Path(os.environ.get("TOWER_COMFY_DATA", REPO / ".tower" / "comfyui"))
MODEL = "tower-test.bin"


def comfy_env(port: int) -> dict[str, str]:
    return {**os.environ, "TOWER_COMFY_PORT": str(port), "TOWER_COMFY_CUSTOM_NODES": str(TEST_NODES)}


def url_of(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def get_json(port: int, path: str) -> dict | None:
    try:
        with urllib.request.urlopen(url_of(port) + path, timeout=3) as response:
            return json.load(response)
    except OSError:
        return None


def start(ports: list[int]) -> None:
    """Start servers in parallel; fail the session with the server log if one does not come up."""
    procs = {port: subprocess.Popen([str(COMFYCTL), "start"], env=comfy_env(port), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True) for port in ports}
    for port, proc in procs.items():
        out, _ = proc.communicate(timeout=900)
        if proc.returncode != 0:
            pytest.fail(f"comfyctl start on port {port} failed:\n{out[-3000:]}")


def stop(port: int) -> None:
    subprocess.run([str(COMFYCTL), "stop"], env=comfy_env(port), capture_output=True, timeout=60)


def kill(port: int) -> None:
    """SIGKILL a server this session started: a crash, not a shutdown."""
    pid = int((DATA_ROOT / str(port) / "comfyui.pid").read_text())
    os.killpg(pid, signal.SIGKILL)
