"""Render progress for callers: a plain record, a callback type, and an async-iterator adapter.

A job reports, in order: ``queued`` (with its position, repeated when it changes), ``started``,
then any number of ``cached``/``executing``/``progress`` events, and finally ``finished`` (or
nothing more, when it fails: the failure is the exception the job raises). A retry on another
server starts the sequence again with a new ``prompt_id`` and ``attempt``.

Two ways to consume it:

* a callback, ``on_progress(event)``, sync or async, called in order from the job's task; a
  callback that raises is logged and ignored (progress must never fail a render);
* :class:`ProgressStream`, an async iterator fed by that callback::

      stream = ProgressStream()
      task = asyncio.create_task(pool.run(workflow, on_progress=stream.send))
      task.add_done_callback(lambda _: stream.close())
      async for event in stream:
          publish(event)
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

ProgressKind = Literal["queued", "started", "cached", "executing", "progress", "finished"]


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    kind: ProgressKind
    prompt_id: str
    server: str
    attempt: int = 1
    node: str | None = None
    """The node id the event is about (``executing``/``progress``)."""
    node_type: str | None = None
    value: int | None = None
    """``progress``: the step reached, out of ``max``."""
    max: int | None = None
    queue_position: int | None = None
    """``queued``: prompts ahead of this one on its server (0 = next to run)."""
    nodes_done: int = 0
    nodes_total: int = 0
    """How many of the graph's nodes have finished (cached ones included), out of how many."""

    @property
    def fraction(self) -> float | None:
        """Overall progress in [0, 1]: finished nodes plus the running node's step fraction."""
        if self.kind == "finished":
            return 1.0
        if not self.nodes_total:
            return None
        step = (self.value / self.max) if self.value is not None and self.max else 0.0
        return min(1.0, (self.nodes_done + step) / self.nodes_total)


ProgressCallback = Callable[[ProgressEvent], Awaitable[None] | None]


async def emit(callback: ProgressCallback | None, event: ProgressEvent) -> None:
    """Deliver ``event``; the callback's failures are logged, never raised."""
    if callback is None:
        return
    try:
        result = callback(event)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("comfy: progress callback failed for %s", event.kind)


class ProgressStream:
    """An async iterator of :class:`ProgressEvent`, fed by :meth:`send`, ended by :meth:`close`.

    It holds at most ``maxlen`` events: when the consumer falls behind, the oldest ``progress``
    events are dropped first (a later step supersedes them); other kinds are always kept.
    """

    def __init__(self, maxlen: int = 256) -> None:
        self._events: deque[ProgressEvent] = deque()
        self._maxlen = maxlen
        self._closed = False
        self._wakeup = asyncio.Event()
        self.dropped = 0

    def send(self, event: ProgressEvent) -> None:
        if self._closed:
            return
        self._events.append(event)
        if len(self._events) > self._maxlen:
            for index, queued in enumerate(self._events):
                if queued.kind == "progress":
                    del self._events[index]
                    self.dropped += 1
                    break
        self._wakeup.set()

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()

    def __aiter__(self) -> AsyncIterator[ProgressEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ProgressEvent]:
        while True:
            while self._events:
                yield self._events.popleft()
            if self._closed:
                return
            self._wakeup.clear()
            await self._wakeup.wait()
