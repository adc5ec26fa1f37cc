"""The engine: durability settings, ping, the storage-down boundary, append-only rows."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from persistence.database import Database
from persistence.errors import StorageUnavailable
from persistence.records import User
from persistence.users import UserStore
from persistence.writer import GroupCommitWriter

AddUser = Callable[..., Awaitable[User]]

# A port on 127.0.0.1 where nothing listens.
DOWN_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:1/nothing"
# Milliseconds pg_terminate_backend waits for the backend to be gone.
TERMINATE_TIMEOUT_MS = 10_000


async def test_durability_settings(db: Database) -> None:
    settings = await db.durability_settings()
    if db.dialect == "sqlite":
        assert settings["journal_mode"] == "wal"
        assert settings["synchronous"] in ("2", "full")
    else:
        assert db.dialect == "postgresql"
        assert settings == {"synchronous_commit": "on"}


async def test_sqlite_connection_pragmas(tmp_path: Path) -> None:
    db = await Database.connect(f"sqlite:///{tmp_path / 'p.db'}")  # plain URL gets aiosqlite
    try:
        assert db.engine.url.drivername == "sqlite+aiosqlite"
        async with db.read() as conn:
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 10_000
            assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == 2

        # The writer's own connection (run_write, in its thread) is the one that commits
        # messages: it must be as durable.
        def pragmas(conn: Connection) -> tuple[object, ...]:
            return tuple(
                conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            )

        assert await db.run_write(pragmas) == ("wal", 2, 1, 10_000)
    finally:
        await db.close()


async def test_ping(db: Database) -> None:
    assert await db.ping() is True


async def test_ping_false_and_fast_when_down() -> None:
    db = await Database.connect(DOWN_PG_URL)
    try:
        started = time.monotonic()
        assert await db.ping() is False
        assert time.monotonic() - started < 5
    finally:
        await db.close()


async def test_stores_raise_storage_unavailable_when_down(tmp_path: Path) -> None:
    for url in (DOWN_PG_URL, f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"):
        db = await Database.connect(url)
        try:
            with pytest.raises(StorageUnavailable):
                await UserStore(db).by_id(1)
        finally:
            await db.close()


async def _backend_pid(conn: Any) -> int:
    return int(await conn.fetchval("SELECT pg_backend_pid()"))


async def test_run_pg_write_keeps_a_connection_after_a_refused_statement(db: Database) -> None:
    """Its transaction is rolled back and its connection goes back to the pool (SQLite has
    no run_pg_write: ValueError)."""
    if db.dialect != "postgresql":
        with pytest.raises(ValueError):
            await db.run_pg_write(_backend_pid)
        return
    import asyncpg

    first = await db.run_pg_write(_backend_pid)

    async def refused(conn: Any) -> None:
        await conn.execute("CREATE TEMPORARY TABLE run_pg_write_t (n INT) ON COMMIT DROP")
        await conn.execute("INSERT INTO run_pg_write_t VALUES (1)")
        await conn.execute("SELECT 1 / 0")

    with pytest.raises(asyncpg.DivisionByZeroError):
        await db.run_pg_write(refused)

    async def state(conn: Any) -> tuple[int, bool, str, str]:
        leftover = await conn.fetchval("SELECT to_regclass('pg_temp.run_pg_write_t') IS NOT NULL")
        durable = await conn.fetchval("SHOW synchronous_commit")
        planning = await conn.fetchval("SHOW plan_cache_mode")
        return await _backend_pid(conn), leftover, durable, planning

    # The same connection, its transaction rolled back; it commits durably (the writer's
    # commits are the ones that matter) and plans its statements once.
    assert await db.run_pg_write(state) == (first, False, "on", "force_generic_plan")


async def test_run_pg_write_runs_again_on_a_new_connection_when_its_own_died(
    db: Database,
) -> None:
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has no server to lose")
    first = await db.run_pg_write(_backend_pid)
    async with db.write() as conn:
        # With a timeout it returns once the backend is gone, not when it was signalled.
        await conn.execute(
            text("SELECT pg_terminate_backend(:pid, :ms)"),
            {"pid": first, "ms": TERMINATE_TIMEOUT_MS},
        )
    calls: list[int] = []

    async def counted(conn: Any) -> int:
        calls.append(1)
        return await _backend_pid(conn)

    second = await db.run_pg_write(counted)
    assert second != first
    assert len(calls) <= 2  # at most once on the dead connection, once on the new one


async def test_writer_on_sqlite_memory_database_uses_the_async_engine() -> None:
    """A :memory: database exists once per connection: the writer must not open another."""
    from persistence.schema import metadata

    db = await Database.connect("sqlite+aiosqlite:///:memory:")
    try:
        async with db.write() as conn:
            await conn.run_sync(metadata.create_all)
        writer = GroupCommitWriter(db)
        await writer.start()
        try:
            with pytest.raises(Exception, match="conversation"):
                await writer.append(
                    sender_id=1, sender_username="a", conv_id=1, cmid="c", text="t", ts=1
                )
        finally:
            await writer.stop()
    finally:
        await db.close()


async def test_messages_are_append_only(db: Database, add_user: AddUser) -> None:
    from persistence.conversations import ConversationStore

    alice = await add_user("alice")
    joined = await ConversationStore(db).join_room("r", "R", alice.id, 1, create=True)
    assert joined is not None
    writer = GroupCommitWriter(db)
    await writer.start()
    try:
        await writer.append(
            sender_id=alice.id,
            sender_username="alice",
            conv_id=joined[0].id,
            cmid="1",
            text="evidence",
            ts=1,
        )
    finally:
        await writer.stop()
    for statement in ("UPDATE messages SET text = 'changed'", "DELETE FROM messages"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with db.write() as conn:
                await conn.execute(text(statement))
    async with db.read() as conn:
        assert (await conn.execute(text("SELECT text FROM messages"))).scalar_one() == "evidence"
