"""SQL migrations in ``store/migrations``, applied in name order, each once, under a lock."""

from __future__ import annotations

from importlib.resources import files

import asyncpg

# Any constant works; it only has to be the same for every Tower process sharing a database.
MIGRATION_LOCK = 7_302_114_001


def migration_files() -> list[tuple[str, str]]:
    folder = files("store") / "migrations"
    entries = sorted((entry.name, entry) for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [(name, entry.read_text()) for name, entry in entries]


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations; return the names applied now. Safe to run concurrently."""
    applied_now = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["name"] for row in await conn.fetch("SELECT name FROM schema_migrations")}
        for name, sql in migration_files():
            if name in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied_now.append(name)
    return applied_now
