"""Connection pools, migrated on open."""

from __future__ import annotations

import asyncpg

from store.migrate import migrate


async def open_pool(url: str, *, min_size: int = 1, max_size: int = 4) -> asyncpg.Pool:
    """A pool on ``url`` with every migration applied; errors say which database failed."""
    try:
        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ConnectionError(
            f"cannot connect to PostgreSQL at {url!r}: {exc}. Start it with `make services` "
            "or point TOWER_DATABASE_URL at a running server."
        ) from exc
    async with pool.acquire() as conn:
        await migrate(conn)
    return pool
