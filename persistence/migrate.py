"""Bring a database's schema to head, safely when several processes start at once."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url

from persistence.database import Database, normalise_url

__all__ = ["current_revision", "head_revision", "migrate"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# pg_advisory_lock key that every chatd migrator takes ("chatd" as 64-bit ASCII, fixed forever).
PG_MIGRATION_LOCK_KEY = 0x6368617464


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """The revision that migrate() brings a database to."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships its revisions
        raise RuntimeError("no migration revisions found")
    return head


def _upgrade(connection: Connection) -> None:
    config = _config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _sqlite_lock_path(url: str) -> Path | None:
    database = make_url(url).database
    if database in (None, "", ":memory:") or str(database).startswith("file:"):
        return None
    return Path(str(database)).with_name(Path(str(database)).name + ".migrate.lock")


@contextlib.asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[None]:
    """An exclusive flock across processes; the blocking wait runs in a thread."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


async def migrate(url: str) -> None:
    """Upgrade to head; a fresh database gets every table, a current one is left alone."""
    url = normalise_url(url)
    lock_path = _sqlite_lock_path(url) if make_url(url).get_backend_name() == "sqlite" else None
    async with contextlib.AsyncExitStack() as stack:
        if lock_path is not None:
            await stack.enter_async_context(_file_lock(lock_path))
        # No statement timeout: waiting for another process's migration is expected.
        db = await Database.connect(url, pg_command_timeout=None)
        stack.push_async_callback(db.close)
        async with db.write_engine.connect() as conn:
            if db.dialect == "postgresql":
                # A session-level lock: held across the migration's own transaction.
                await conn.execute(
                    text("SELECT pg_advisory_lock(:key)"), {"key": PG_MIGRATION_LOCK_KEY}
                )
                await conn.commit()
            try:
                async with conn.begin():
                    await conn.run_sync(_upgrade)
            finally:
                if db.dialect == "postgresql":
                    # Closing the engine below ends the session, which frees the lock anyway.
                    with contextlib.suppress(Exception):
                        await conn.execute(
                            text("SELECT pg_advisory_unlock(:key)"), {"key": PG_MIGRATION_LOCK_KEY}
                        )
                        await conn.commit()


async def current_revision(url: str) -> str | None:
    """The revision a database is at (None before the first migration)."""
    db = await Database.connect(url)
    try:
        async with db.read() as conn:

            def _read(connection: Connection) -> str | None:
                return MigrationContext.configure(connection).get_current_revision()

            return await conn.run_sync(_read)
    finally:
        await db.close()
