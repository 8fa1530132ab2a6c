"""The API's connections to Kafka and PostgreSQL, opened on first use and re-opened after an
outage, so the API starts (and answers /health and /ready) while a service is down."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from aiokafka.errors import KafkaError

from api.problems import ServiceUnavailable
from events.envelope import Envelope
from foundation.kafka import ensure_topics
from foundation.publisher import Publisher
from foundation.settings import Settings
from store.pool import open_pool

log = logging.getLogger("tower.api")
CHECK_TIMEOUT_S = 2.0
PROJECTION_POLL_S = 0.1
T = TypeVar("T")
# What a query raises when the database, not the query, is the problem.
_DATABASE_DOWN = (
    OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)


class Backends:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._publisher: Publisher | None = None
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    try:
                        self._pool = await asyncio.wait_for(open_pool(self.settings.database_url, max_size=8), 5)
                    except (ConnectionError, OSError, asyncpg.PostgresError, TimeoutError) as exc:
                        raise ServiceUnavailable("PostgreSQL", _reason(exc)) from exc
        return self._pool

    async def query(self, read: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        """Run a read on the pool; a database outage becomes a 503 naming PostgreSQL."""
        pool = await self.pool()
        try:
            return await read(pool)
        except _DATABASE_DOWN as exc:
            raise ServiceUnavailable("PostgreSQL", _reason(exc)) from exc

    async def query_until_found(self, read: Callable[[asyncpg.Pool], Awaitable[T | None]], wait_s: float) -> T | None:
        """:meth:`query` again every :data:`PROJECTION_POLL_S` while it finds nothing, for up to
        ``wait_s``: the learner projects what was just submitted a moment later."""
        deadline = time.monotonic() + wait_s
        while (value := await self.query(read)) is None and time.monotonic() < deadline:
            await asyncio.sleep(PROJECTION_POLL_S)
        return value

    async def publisher(self) -> Publisher:
        if self._publisher is None:
            async with self._lock:
                if self._publisher is None:
                    publisher = Publisher(self.settings, client_id="tower-api", request_timeout_ms=10_000)
                    try:
                        await asyncio.wait_for(ensure_topics(self.settings, timeout_s=5), 10)
                        await asyncio.wait_for(publisher.start(), 10)
                    except (ConnectionError, KafkaError, OSError, TimeoutError) as exc:
                        await publisher.stop()
                        raise ServiceUnavailable("Kafka", _reason(exc)) from exc
                    self._publisher = publisher
        return self._publisher

    async def publish(self, envelopes: list[Envelope]) -> None:
        """Produce ``envelopes`` and wait until the broker has every one (acks=all)."""
        publisher = await self.publisher()
        try:
            await publisher.publish(envelopes)
        except KafkaError as exc:
            raise ServiceUnavailable("Kafka", _reason(exc)) from exc

    async def check(self) -> dict[str, str]:
        """``{"kafka": "ok" | why not, "postgresql": ...}``, each within :data:`CHECK_TIMEOUT_S`."""
        kafka, postgres = await asyncio.gather(self._check_kafka(), self._check_postgres())
        return {"kafka": kafka, "postgresql": postgres}

    async def _check_kafka(self) -> str:
        try:
            publisher = await self.publisher()
            await asyncio.wait_for(publisher.client.fetch_all_metadata(), CHECK_TIMEOUT_S)
            return "ok"
        except ServiceUnavailable as exc:
            return exc.detail
        except (KafkaError, OSError, TimeoutError) as exc:
            return f"Kafka is unavailable: {_reason(exc)}"

    async def _check_postgres(self) -> str:
        try:
            pool = await self.pool()
            await asyncio.wait_for(pool.fetchval("SELECT 1"), CHECK_TIMEOUT_S)
            return "ok"
        except ServiceUnavailable as exc:
            return exc.detail
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            return f"PostgreSQL is unavailable: {_reason(exc)}"

    async def close(self) -> None:
        if self._publisher is not None:
            await self._publisher.stop()
            self._publisher = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."
