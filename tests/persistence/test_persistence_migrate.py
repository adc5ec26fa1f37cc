"""Migrations: a fresh database, a second run, three processes at once, schema == metadata."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from persistence.database import Database
from persistence.migrate import current_revision, head_revision, migrate
from persistence.schema import metadata

ROOT = Path(__file__).resolve().parents[2]
# Seconds each migrating subprocess may take.
SUBPROCESS_TIMEOUT_S = 120
MIGRATORS = 3

_SCRIPT = (
    "import asyncio, sys\n"
    "from persistence.migrate import migrate\n"
    "asyncio.run(migrate(sys.argv[1]))\n"
    "print('migrated')\n"
)


def _sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database, never migrated."""
    if request.param == "sqlite":
        return _sqlite_url(tmp_path)
    return str(request.getfixturevalue("pg_url"))


async def _schema_diff(url: str) -> list[Any]:
    db = await Database.connect(url)
    try:
        async with db.read() as conn:

            def diff(connection: Connection) -> list[Any]:
                context = MigrationContext.configure(connection, opts={"compare_type": True})
                return list(compare_metadata(context, metadata))

            return await conn.run_sync(diff)
    finally:
        await db.close()


async def test_fresh_database_then_again(fresh_url: str) -> None:
    assert await current_revision(fresh_url) is None
    await migrate(fresh_url)
    assert await current_revision(fresh_url) == head_revision()
    await migrate(fresh_url)  # already at head: nothing to do, no error
    assert await current_revision(fresh_url) == head_revision()


async def test_migrated_schema_matches_the_metadata(fresh_url: str) -> None:
    await migrate(fresh_url)
    assert await _schema_diff(fresh_url) == []


@pytest.mark.slow
async def test_three_processes_migrate_at_once(fresh_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _SCRIPT,
            fresh_url,
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(MIGRATORS)
    ]
    try:
        async with asyncio.timeout(SUBPROCESS_TIMEOUT_S):
            outputs = [await proc.communicate() for proc in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == "migrated"
    assert await current_revision(fresh_url) == head_revision()
    assert await _schema_diff(fresh_url) == []
