"""What a stage is: its input topics and a handler from one event to the events it causes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

import asyncpg

from events.envelope import Envelope
from events.topics import TopicSpec
from foundation.settings import Settings
from store.pool import open_pool
from store.projections import Origin


class Stage(ABC):
    """One pipeline stage = one Faust app = one consumer group.

    ``handle`` must be safe to call again with the same event (delivery is at least once): its
    outputs are derived deterministically from the input (see :meth:`Envelope.derive`) and its
    side effects are idempotent.
    """

    name: str
    inputs: tuple[TopicSpec, ...]
    # Whether the stage also reads its inputs' dead-letter topics (``on_dead_letter``).
    reads_dead_letters: bool = False
    # Events of one input the stage works on at once (agents.window.OrderedWindow when over 1).
    max_in_flight: int = 1

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Set by the runtime: sends a side event (render progress) at once, without waiting for
        # the broker; side events are best effort and never hold up the pipeline.
        self.publish: Callable[[Envelope], Awaitable[None]] = _nowhere

    @property
    def source(self) -> str:
        return f"tower/{self.name}"

    async def start(self) -> None:
        """Open the stage's resources (pools, models) before the first event."""

    async def stop(self) -> None:
        """Release what :meth:`start` opened."""

    async def on_produced(self, envelope: Envelope, outputs: list[Envelope]) -> None:
        """Called once the broker has every output of ``envelope``, before it is acknowledged."""

    async def on_dead_letter(self, key: bytes | None, headers: dict[str, str], origin: Origin) -> None:
        """A dead letter of one of the stage's inputs (only if ``reads_dead_letters``)."""

    @abstractmethod
    async def handle(self, envelope: Envelope, origin: Origin) -> list[Envelope]:
        """The events caused by ``envelope``; raise to have it retried, then dead-lettered."""


class DatabaseStage(Stage):
    """A stage that reads or writes PostgreSQL: a small pool, migrated, opened before the first event."""

    _pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "the runtime calls start() before the first event"
        return self._pool

    async def start(self) -> None:
        # Two connections per event in flight: a handler may run two queries at once.
        self._pool = await open_pool(self.settings.database_url, max_size=2 * self.max_in_flight)

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


async def _nowhere(envelope: Envelope) -> None:
    """The default ``publish`` of a stage not run by the runtime (unit tests)."""
