"""Fixtures for the ComfyUI client tests: a FAKE server per test (see fake_server.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from comfy.client import ClientConfig, ComfyClient
from comfy.jobs import JobConfig
from tests.unit.comfy.fake_server import FakeComfy

#: Short waits so the fallback paths (polling, retries) run in milliseconds.
FAST_JOB = JobConfig(socket_wait=1.0, silence_poll=0.05, max_poll=0.2, done_signal_wait=0.05, submit_checks=(0.02, 0.05))
FAST_CLIENT = ClientConfig(connect=0.5, request=2.0, submit=0.5, view=2.0, socket_open=1.0, socket_ping=5.0)


async def eventually(condition: Callable[[], object], what: str, timeout_s: float = 10.0) -> None:
    """Wait until ``condition()`` holds (the client's clean-ups run in the background), failing
    with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout_s} s")
        await asyncio.sleep(0.01)


@pytest.fixture
async def fake() -> AsyncIterator[FakeComfy]:
    server = FakeComfy()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(fake: FakeComfy) -> AsyncIterator[ComfyClient]:
    c = ComfyClient(fake.url, config=FAST_CLIENT)
    yield c
    await c.aclose()


def save_graph(extra: dict | None = None, source: str = "1") -> dict:
    """A tiny graph the fake understands: node 1 (or ``extra``) then a saving node."""
    graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 6, "batch_size": 1}}}
    graph.update(extra or {})
    graph["99"] = {"class_type": "SaveImage", "inputs": {"images": [source, 0], "filename_prefix": "t"}}
    return graph
