"""Connection pools, migrated on open."""

from __future__ import annotations

import asyncpg

from foundation.settings import mask_password
from store.migrate import migrate


async def open_pool(url: str, *, min_size: int = 1, max_size: int = 4) -> asyncpg.Pool:
    """A pool on ``url`` with every migration applied; errors say which database failed."""
    try:
        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, reset=_keep_session)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ConnectionError(
            f"cannot connect to PostgreSQL at {mask_password(url)!r}: {exc}. Start it with `make services` "
            "or point TOWER_DATABASE_URL at a running server."
        ) from exc
    async with pool.acquire() as conn:
        await migrate(conn)
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:  # noqa: ARG001 - the pool's reset hook
    """Return a connection to its pool as it is. asyncpg's default reset costs a round trip on every
    release (release advisory locks, close cursors, unlisten, reset settings) and Tower holds none of
    those past a transaction; asyncpg still rolls back a transaction left open before calling this."""


async def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server of ``server_url``; return its URL (tests, benchmarks)."""
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{server_url.rpartition('/')[0]}/{name}"


async def drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
