"""Test and benchmark harness: Tower's processes as children (stage workers, the API), started
and stopped the way an operator would. Not used by Tower itself."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

T = TypeVar("T")


class StageProcesses:
    """Stage workers as child processes (``python -m tower worker NAME``), one per stage, as in
    production: the tests and benchmarks use it to run, kill and restart stages independently."""

    def __init__(self, env: dict[str, str] | None = None, log_dir: Path | None = None) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self.starts: dict[str, int] = {}

    def start(self, *stages: str) -> None:
        """Start a worker per name: a stage (``renderer``), or ``stage:copy`` for another worker
        of the same stage (``renderer:2``), sharing its consumer group."""
        for stage in stages:
            self.starts[stage] = self.starts.get(stage, 0) + 1
            output = None
            if self.log_dir is not None:
                output = open(self.log_dir / f"{stage}.{self.starts[stage]}.log", "w")  # noqa: SIM115 - the child owns it
            self.procs[stage] = subprocess.Popen(
                [sys.executable, "-m", "tower", "worker", stage.partition(":")[0]],
                env=self.env, stdout=output, stderr=subprocess.STDOUT if output else None,
                start_new_session=self.log_dir is not None,
            )

    def stop(self, stage: str, timeout_s: float = 20.0) -> None:
        """SIGTERM one worker and wait for it (SIGKILL after ``timeout_s``)."""
        proc = self.procs.pop(stage)
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self, stage: str) -> None:
        """SIGKILL: no shutdown hooks, no final offset commit, exactly like a crash."""
        proc = self.procs.pop(stage)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def exited(self) -> dict[str, int]:
        return {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}

    async def watch(self, work: Awaitable[T]) -> T:
        """Await ``work``, failing fast (with the logs' tails) if a worker exits meanwhile."""
        task = asyncio.ensure_future(work)
        while not task.done():
            if self.exited():
                task.cancel()
                raise RuntimeError(f"a worker exited: {self.exited()}\n{self.tail()}")
            await asyncio.wait({task}, timeout=0.5)
        return task.result()

    async def until_logged(self, stage: str, text: str, *, latest: bool = False, timeout_s: float = 120) -> None:
        """Until a log of ``stage`` (``latest``: its latest start's) contains ``text``; fails with the
        logs' tails after ``timeout_s``, or at once if a worker exits."""
        names = f"{stage}.{self.starts[stage]}.log" if latest else f"{stage}.*.log"
        deadline = time.monotonic() + timeout_s
        while not any(text in path.read_text(errors="replace") for path in self.log_dir.glob(names)):
            self.assert_alive()
            assert time.monotonic() < deadline, f"{stage} never logged {text!r} in {timeout_s:.0f} s\n{self.tail()}"
            await asyncio.sleep(0.1)

    def assert_alive(self) -> None:
        dead = self.exited()
        assert not dead, f"workers exited: {dead}\n{self.tail()}"

    def tail(self, lines: int = 15) -> str:
        if self.log_dir is None:
            return ""
        out = []
        for path in sorted(self.log_dir.glob("*.log")):
            out.append(f"--- {path.name}")
            out.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(out)

    def stop_all(self, timeout_s: float = 20.0) -> list[str]:
        """SIGTERM every worker; the ones still running after ``timeout_s`` are SIGKILLed and named."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        stragglers = []
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stragglers.append(name)
                proc.kill()
                proc.wait()
        self.procs.clear()
        return stragglers


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ApiServer:
    """``tower api`` as a child process on a loopback port (tests and benchmarks)."""

    url: str
    token: str
    process: subprocess.Popen
    log_path: Path

    def client(self, *, token: str | None = None, authorised: bool = True) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token or self.token}"} if authorised else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_api(env: dict[str, str], log_path: Path, token: str = "test-token", cwd: Path | None = None) -> ApiServer:
    """Start ``tower api`` with ``env`` on a free port and wait (up to 60 s) until /health answers.
    ``cwd``: the checkout whose code runs (``python -m`` puts it first on the path)."""
    port = free_port()
    with open(log_path, "w") as output:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "tower", "api", "--port", str(port)],
            env={**env, "TOWER_API_TOKEN": token}, stdout=output, stderr=subprocess.STDOUT, cwd=cwd,
        )
    server = ApiServer(f"http://127.0.0.1:{port}", token, process, log_path)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"tower api exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            process.kill()
            raise TimeoutError(f"tower api did not answer /health within 60 s:\n{server.log()}")
        time.sleep(0.1)


@contextlib.contextmanager
def serve_llama(python: Path, model: Path, log_path: Path, *options: str, start_timeout_s: float = 60.0) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``, from the
    environment of ``python``) serving ``model`` as ``tower-test`` with ``options``; yields its API
    base (``http://127.0.0.1:PORT/v1``) once ``/v1/models`` answers, and stops it after. Raises
    ``RuntimeError`` with the end of its log if it exits or does not answer in time."""
    port = free_port()
    base = f"http://127.0.0.1:{port}/v1"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [str(python), "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "tower-test",
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", *options],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + start_timeout_s
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"llama-cpp-python's server exited with {server.returncode}: "
                                       f"{log_path.read_text()[-2000:]}")
                with contextlib.suppress(httpx.TransportError):  # not listening yet
                    if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"llama-cpp-python's server did not answer within {start_timeout_s:.0f} s: "
                                       f"{log_path.read_text()[-2000:]}")
                time.sleep(0.2)
            yield base
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
