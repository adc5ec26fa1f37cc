"""The engine, its per-connection settings, transactions, and the storage-down boundary."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from persistence.errors import StorageUnavailable

__all__ = ["Database", "StorageUnavailable", "is_unavailable", "normalise_url"]

# Seconds that ping() waits for SELECT 1 before it calls the database down.
PING_TIMEOUT_S = 2.0
# Seconds asyncpg waits for a connection attempt: a down database errors fast instead of hanging.
PG_CONNECT_TIMEOUT_S = 5.0
# Seconds asyncpg waits for one statement before it gives up (a hung server, a partition).
PG_COMMAND_TIMEOUT_S = 30.0
# Connections kept open per engine; overflow connections are opened beyond them under load.
POOL_SIZE = 10
POOL_MAX_OVERFLOW = 10
# Connections of run_pg_write's own pool: the group-commit writer runs one batch at a time,
# so one is kept open; the overflow is for any other caller at the same time.
PG_WRITE_POOL_SIZE = 1
PG_WRITE_POOL_MAX_OVERFLOW = 4
# Times run_pg_write runs fn again on a new connection when the one its pool gave turns out
# to be dead (after a PostgreSQL restart) before the COMMIT.
STALE_CONNECTION_RETRIES = 1
# Milliseconds SQLite waits on a locked database (another writer, another process) before
# it reports SQLITE_BUSY.
SQLITE_BUSY_TIMEOUT_MS = 10_000

# run_pg_write's connections run the same few prepared statements (the writer's) over and
# over: plan them once, not at every run (a custom plan is most of their server time, and
# their generic plans are the same index probes).
_PG_WRITE_SETTINGS = {"plan_cache_mode": "force_generic_plan"}

# busy_timeout comes first so that switching a fresh file to WAL waits for other processes.
_SQLITE_PRAGMAS = (
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
)

T = TypeVar("T")

# The execution option that marks a write transaction (BEGIN IMMEDIATE on SQLite).
_WRITE_OPTION = "chatd_write"


def normalise_url(url: str) -> str:
    """Accept the plain dialect names too, and give them the async drivers."""
    parsed = make_url(url)
    if parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def _asyncpg_unavailable_types() -> tuple[type[BaseException], ...]:
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - asyncpg is a locked dependency
        return ()
    return (
        asyncpg.PostgresConnectionError,  # class 08: connection exceptions
        asyncpg.CannotConnectNowError,  # 57P03: starting up or shutting down
        asyncpg.AdminShutdownError,  # 57P01
        asyncpg.CrashShutdownError,  # 57P02
        asyncpg.ConnectionDoesNotExistError,
        asyncpg.InterfaceError,
    )


_ASYNCPG_UNAVAILABLE = _asyncpg_unavailable_types()


def _asyncpg_server_error_type() -> tuple[type[BaseException], ...]:
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - asyncpg is a locked dependency
        return ()
    return (asyncpg.PostgresError,)


# An error that the server sent (a refused statement, but also a connection failure).
_ASYNCPG_SERVER_ERROR = _asyncpg_server_error_type()


def is_unavailable(exc: BaseException) -> bool:
    """True when exc says the database cannot be reached, rather than that the data is bad."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageUnavailable | OSError | TimeoutError):
            return True
        if isinstance(current, OperationalError | InterfaceError):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if _ASYNCPG_UNAVAILABLE and isinstance(current, _ASYNCPG_UNAVAILABLE):
            return True
        nxt = getattr(current, "orig", None)
        if not isinstance(nxt, BaseException):
            nxt = current.__cause__
        current = nxt
    return False


class Database:
    """One engine on one database; every store takes one of these."""

    engine: AsyncEngine
    dialect: str

    def __init__(self, engine: AsyncEngine, *, pg_write_engine: AsyncEngine | None = None) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # Shares the pool; its transactions start with BEGIN IMMEDIATE on SQLite.
        self._write_engine = engine.execution_options(**{_WRITE_OPTION: True})
        # PostgreSQL: run_pg_write's own pool, which does not ping (see run_pg_write).
        self._pg_write_engine = pg_write_engine
        # SQLite only: a plain sqlite3 engine used from one thread of our own (see run_write).
        self._sync_engine: Engine | None = None
        self._sync_executor: ThreadPoolExecutor | None = None
        self._sync_lock = threading.Lock()

    @classmethod
    async def connect(
        cls, url: str, *, pg_command_timeout: float | None = PG_COMMAND_TIMEOUT_S
    ) -> Database:
        """Make the engine; connections open lazily, so a down database fails on first use.

        pg_command_timeout (seconds per statement, None for no limit) is for migrations,
        which may wait long for another process's migration lock.
        """
        url = normalise_url(url)
        backend = make_url(url).get_backend_name()
        if backend == "sqlite":
            return cls(_sqlite_engine(url))
        if backend == "postgresql":
            return cls(
                _postgresql_engine(url, pg_command_timeout),
                pg_write_engine=_postgresql_engine(
                    url,
                    pg_command_timeout,
                    pre_ping=False,
                    pool_size=PG_WRITE_POOL_SIZE,
                    max_overflow=PG_WRITE_POOL_MAX_OVERFLOW,
                    settings=_PG_WRITE_SETTINGS,
                ),
            )
        raise ValueError(f"unsupported database URL (sqlite or postgresql): {backend}")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read transaction; connection failures come out as StorageUnavailable."""
        async with self._translate(), self.engine.connect() as conn, conn.begin():
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (on SQLite it holds the write lock from its BEGIN)."""
        async with self._translate(), self._write_engine.connect() as conn, conn.begin():
            yield conn

    async def run_write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(connection, *args), a plain function, inside one write transaction.

        On PostgreSQL fn runs on the async engine (each statement is a network round
        trip anyway; the group-commit writer uses run_pg_write there). On SQLite it runs in
        one thread of our own on a sqlite3 connection, so the whole transaction costs one hop
        between threads instead of one per statement: this is what the group-commit writer
        uses for its batches.
        """
        async with self._translate():
            if self.dialect != "sqlite" or _is_memory(self.engine.url.database):
                async with self._write_engine.connect() as conn, conn.begin():
                    return await conn.run_sync(fn, *args)
            executor = self._sqlite_executor()
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(executor, self._run_sqlite_write, fn, args)

    async def run_pg_write(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """PostgreSQL only: await fn(connection, *args) inside one transaction, where
        connection is the bare asyncpg connection. A lost database comes out as
        StorageUnavailable, a refused statement as asyncpg's own exception.

        This is what the group-commit writer uses for its batches: without SQLAlchemy's
        layers between them, a batch costs a fraction of the Python. The connections come
        from a pool of their own that does not ping one before handing it out (the pre-ping
        is a BEGIN, a statement and a ROLLBACK: three round trips per transaction). A
        connection that died meanwhile (a restart) fails instead before the COMMIT, having
        committed nothing, and fn runs once more on a new connection: so fn must have no
        effects outside its transaction. A failed COMMIT is never run again (it may have
        committed). The pool's connections plan each prepared statement once (see
        _PG_WRITE_SETTINGS), and commit durably like every other (synchronous_commit=on).
        """
        if self._pg_write_engine is None:
            raise ValueError("run_pg_write needs a PostgreSQL database made by connect()")
        async with self._translate():
            attempt = 0
            while True:
                async with self._pg_write_engine.connect() as conn:
                    driver = (await conn.get_raw_connection()).driver_connection
                    assert driver is not None  # a checked-out connection is a live one
                    committing = False
                    try:
                        async with driver.transaction():
                            result = await fn(driver, *args)
                            committing = True
                        return result
                    except BaseException as exc:
                        dead = driver.is_closed()
                        # SQLAlchemy saw none of this, so it is up to us to keep a connection
                        # out of the pool unless the server answered and nothing is left open.
                        answered = isinstance(exc, _ASYNCPG_SERVER_ERROR)
                        if dead or driver.is_in_transaction() or not answered:
                            await conn.invalidate()
                        stale = dead and not committing and isinstance(exc, Exception)
                        if not stale or attempt >= STALE_CONNECTION_RETRIES:
                            raise
                        attempt += 1

    def _sqlite_executor(self) -> ThreadPoolExecutor:
        with self._sync_lock:
            if self._sync_executor is None:
                url = self.engine.url.set(drivername="sqlite+pysqlite")
                self._sync_engine = _sqlite_sync_engine(url.render_as_string(False))
                self._sync_executor = ThreadPoolExecutor(1, thread_name_prefix="chatd-sqlite")
            return self._sync_executor

    def _run_sqlite_write(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        assert self._sync_engine is not None
        with self._sync_engine.connect() as conn:
            conn = conn.execution_options(**{_WRITE_OPTION: True})
            with conn.begin():
                return fn(conn, *args)

    @asynccontextmanager
    async def _translate(self) -> AsyncIterator[None]:
        try:
            yield
        except StorageUnavailable:
            raise
        except Exception as exc:
            if is_unavailable(exc):
                raise StorageUnavailable(f"database unavailable: {exc}") from exc
            raise

    @property
    def write_engine(self) -> AsyncEngine:
        """The engine whose transactions are write transactions (shares the pool)."""
        return self._write_engine

    async def ping(self) -> bool:
        """True when SELECT 1 answers within PING_TIMEOUT_S, False on any error."""
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                async with self.engine.connect() as conn:
                    return (await conn.execute(text("SELECT 1"))).scalar() == 1
        except Exception:
            return False

    async def durability_settings(self) -> dict[str, str]:
        """The settings that make a commit durable, as read back from a pooled connection."""
        async with self._translate(), self.engine.connect() as conn:
            if self.dialect == "sqlite":
                journal = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
                synchronous = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
                return {"journal_mode": str(journal).lower(), "synchronous": str(synchronous)}
            sync_commit = (await conn.exec_driver_sql("SHOW synchronous_commit")).scalar()
            return {"synchronous_commit": str(sync_commit)}

    async def close(self) -> None:
        with self._sync_lock:
            executor, self._sync_executor = self._sync_executor, None
            sync_engine, self._sync_engine = self._sync_engine, None
        if executor is not None:
            # The engine's connections belong to the executor's thread: close them there.
            if sync_engine is not None:
                await asyncio.get_running_loop().run_in_executor(executor, sync_engine.dispose)
            executor.shutdown(wait=True)
        if self._pg_write_engine is not None:
            await self._pg_write_engine.dispose()
        await self.engine.dispose()


def _is_memory(database: str | None) -> bool:
    return database in (None, "", ":memory:")


def _sqlite_engine(url: str) -> AsyncEngine:
    kwargs: dict[str, Any] = {}
    if not _is_memory(make_url(url).database):
        kwargs.update(pool_size=POOL_SIZE, max_overflow=POOL_MAX_OVERFLOW)
    # Errors and logs never carry bound values: they are message texts and tokens.
    engine = create_async_engine(url, hide_parameters=True, **kwargs)
    _sqlite_setup(engine.sync_engine)
    return engine


def _sqlite_sync_engine(url: str) -> Engine:
    # One connection, used by one thread (the writer's): no pool beyond it is needed.
    engine = create_engine(url, pool_size=1, max_overflow=0, hide_parameters=True)
    _sqlite_setup(engine)
    return engine


def _sqlite_setup(engine: Engine) -> None:
    """SQLAlchemy's documented recipe for (aio)sqlite: take BEGIN away from the driver and
    emit it ourselves, so that transactions (and DDL) are real and writes can say IMMEDIATE."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in _SQLITE_PRAGMAS:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A write transaction takes the write lock at once: a deferred one that reads and
        # then writes can fail with SQLITE_BUSY on upgrade, which busy_timeout cannot wait out.
        if conn.get_execution_options().get(_WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def _postgresql_engine(
    url: str,
    command_timeout: float | None,
    *,
    pre_ping: bool = True,
    pool_size: int = POOL_SIZE,
    max_overflow: int = POOL_MAX_OVERFLOW,
    settings: dict[str, str] | None = None,
) -> AsyncEngine:
    return create_async_engine(
        url,
        # Errors and logs never carry bound values: they are message texts and tokens.
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=pre_ping,
        connect_args={
            "timeout": PG_CONNECT_TIMEOUT_S,
            "command_timeout": command_timeout,
            "server_settings": {"synchronous_commit": "on", **(settings or {})},
        },
    )
