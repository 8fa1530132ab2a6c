"""Bounded in-flight work on one stream, acknowledged in order.

Faust acknowledges an event when its agent takes the next one, so an agent handles one event
at a time. :class:`OrderedWindow` lets a stage work on up to ``limit`` events at once (renders
waiting on a remote server, scorings on a device) without weakening what a committed offset
means:

- **Offsets advance only past completed work.** Each partition's events are acknowledged in
  offset order, an event only once it and every event before it are done. Faust never sees a
  gap in the acknowledged offsets (out-of-order acks with a gap make Faust commit past unfinished
  work: faust-streaming #606).
- **One key at a time.** An event waits for the previous event with the same key: the attempts
  of one shot (one key, see :func:`events.envelope.message_key`) are handled in their order.
- **Nothing is acknowledged on the way out.** :meth:`close` cancels the work in flight; those
  events are not acknowledged, so they are delivered again (handlers are idempotent).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any


class OrderedWindow:
    """Up to ``limit`` events in flight; per key in order; acknowledged per partition in order."""

    def __init__(self, limit: int, ack: Callable[[Any], object]) -> None:
        if limit < 1:
            raise ValueError(f"the in-flight limit must be at least 1, got {limit}")
        self._slots = asyncio.Semaphore(limit)
        self._ack = ack
        self._pending: dict[Hashable, deque[tuple[Any, asyncio.Task[None]]]] = {}
        self._last_of_key: dict[Hashable, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def submit(self, event: Any, partition: Hashable, key: Hashable, work: Callable[[], Awaitable[None]]) -> None:
        """Start ``work`` for ``event`` once a slot is free (this waits, so the stream waits).

        ``work`` must not raise (the runtime's ``process`` dead-letters instead); if it does, the
        event is still acknowledged in its turn, as Faust would have.
        """
        await self._slots.acquire()
        previous = self._last_of_key.get(key)
        task = asyncio.ensure_future(self._run(previous, work))
        self._tasks.add(task)
        self._last_of_key[key] = task
        self._pending.setdefault(partition, deque()).append((event, task))
        task.add_done_callback(lambda done: self._settle(partition, key, done))

    async def _run(self, previous: asyncio.Task[None] | None, work: Callable[[], Awaitable[None]]) -> None:
        try:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            await work()
        finally:
            self._slots.release()

    def _settle(self, partition: Hashable, key: Hashable, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._last_of_key.get(key) is task:
            del self._last_of_key[key]
        queue = self._pending.get(partition)
        while queue and queue[0][1].done():
            event, done = queue.popleft()
            if done.cancelled():
                # Abandoned (a stop): neither it nor anything after it in the partition is acknowledged.
                queue.clear()
                break
            self._ack(event)
        if queue is not None and not queue:
            del self._pending[partition]

    async def drain(self) -> None:
        """Wait until everything submitted is done (and acknowledged)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def close(self) -> None:
        """Cancel the work in flight; it stays unacknowledged, to be delivered again."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
