"""Fixtures for the persistence tests: each test gets a migrated, empty database, on SQLite
(a file of its own) and on PostgreSQL (one database per test session, emptied per test)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    # The project is not installed into the virtualenv; make `import persistence` work.
    sys.path.insert(0, str(ROOT))

from persistence.database import Database  # noqa: E402
from persistence.migrate import migrate  # noqa: E402
from persistence.records import User  # noqa: E402
from persistence.schema import metadata  # noqa: E402
from persistence.users import UserStore  # noqa: E402

AddUser = Callable[..., Awaitable[User]]


async def _pg_admin(url: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_session_url(private_postgres: Any) -> Iterator[str]:
    """One migrated database on the harness's PostgreSQL for the session's store tests."""
    name = f"chatd_t_{uuid.uuid4().hex[:12]}"
    private_postgres.create_database(name)
    url = str(private_postgres.url(name))
    asyncio.run(migrate(url))
    yield url
    private_postgres.drop_database(name)


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a migrated database with no rows, on each backend.

    A plain (not async) fixture: it runs its own event loop, outside the test's.
    """
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'chatd.db'}"
        asyncio.run(migrate(url))
        return url
    url = str(request.getfixturevalue("pg_session_url"))
    tables = ", ".join(table.name for table in metadata.sorted_tables)
    asyncio.run(_pg_admin(url, f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    return url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(db_url)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def add_user(db: Database) -> AddUser:
    """Creates an account with defaults for what the test does not care about."""
    store = UserStore(db)

    async def _add(name: str, *, role: str = "member", created: int = 1_000) -> User:
        return await store.create(
            username=name,
            username_key=name.casefold(),
            email=f"{name}@example.org",
            email_key=f"{name.casefold()}@example.org",
            password_hash="argon2$not-a-real-hash",
            birthdate=date(2000, 1, 2),
            role=role,
            created=created,
        )

    return _add
