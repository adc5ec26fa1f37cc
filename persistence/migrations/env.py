"""Alembic environment: runs on the connection migrate() hands it, or from the alembic CLI."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from persistence.schema import metadata


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # Our SQLite connections emit their own BEGIN, so DDL there is transactional too.
        transactional_ddl=True,
        render_as_batch=sqlite,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url(url: str) -> None:
    from persistence.database import Database

    db = await Database.connect(url, pg_command_timeout=None)
    try:
        async with db.write_engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await db.close()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url, or run persistence.migrate.migrate(url)")
    asyncio.run(_run_from_url(url))


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported")
_main()
