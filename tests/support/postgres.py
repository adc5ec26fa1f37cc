"""A private PostgreSQL cluster for the tests, or a server named by CHATD_TEST_PG_URL.

The private cluster lives in a temporary directory, listens on a free port on 127.0.0.1
only, and runs with fsync and synchronous_commit on, as in production: tests of
durability must not pass because durability was switched off. Its postmaster is a
direct child of the test process, so a test can stop, crash (SIGKILL) and restart it.
"""

import glob
import os
import re
import shutil
import signal
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any, Literal, Protocol

import asyncpg

from .aio import run_coroutine
from .ports import LOOPBACK, free_port, port_accepts
from .procs import (
    KILL_TIMEOUT,
    account_ids,
    children_of,
    log_tail,
    reap,
    run_as,
    send_signal,
    spawn,
    stop_process,
    wait_gone,
)

START_TIMEOUT = 60.0
"""Seconds for the postmaster to accept connections (crash recovery included)."""

STOP_TIMEOUT = 60.0
"""Seconds for a shutdown (a fast one writes a checkpoint) before SIGKILL."""

CONNECT_TIMEOUT = 10.0
"""Seconds for one admin connection (create/drop database, queries)."""

START_ATTEMPTS = 3
"""First starts tried on fresh ports, when another process took the port meanwhile."""

SUPERUSER = "postgres"
"""The cluster's superuser; trust authentication, so no password."""

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, postgres) not found: install them "
    "(Debian: `apt-get install postgresql`), or set CHATD_TEST_PG_BIN to the directory "
    "that holds them, or CHATD_TEST_PG_URL to a PostgreSQL server the tests may use"
)

ShutdownMode = Literal["smart", "fast", "immediate"]

# What pg_ctl sends for each shutdown mode.
_SHUTDOWN_SIGNALS: dict[str, int] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}

_DBNAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresServer(Protocol):
    """What tests may do with any PostgreSQL server, private or not."""

    private: bool

    def url(self, dbname: str = "postgres") -> str: ...
    def create_database(self, name: str) -> None: ...
    def drop_database(self, name: str) -> None: ...
    def query(self, sql: str, *args: Any, dbname: str = "postgres") -> list[tuple[Any, ...]]: ...
    def close(self) -> None: ...


def find_postgres_bin() -> Path:
    """The directory holding initdb and postgres; raises RuntimeError saying what to install."""
    override = os.environ.get("CHATD_TEST_PG_BIN")
    if override:
        if not (Path(override) / "initdb").exists():
            raise RuntimeError(f"CHATD_TEST_PG_BIN={override} holds no initdb. {INSTALL_HINT}")
        return Path(override)

    def version(initdb: str) -> tuple[int, ...]:
        name = Path(initdb).parent.parent.name
        return tuple(int(part) for part in name.split(".") if part.isdigit())

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(on_path)
    for initdb in candidates:
        bin_dir = Path(initdb).parent
        if (bin_dir / "postgres").exists():
            return bin_dir
    raise RuntimeError(INSTALL_HINT)


def default_run_as() -> str | None:
    """The account to run the cluster as: initdb and postgres refuse to run as root."""
    if os.geteuid() != 0:
        return None
    return os.environ.get("CHATD_TEST_PG_USER", "nobody")


def check_dbname(name: str) -> str:
    """A database name safe to put in SQL unquoted-looking form; raises ValueError."""
    if not _DBNAME.fullmatch(name):
        raise ValueError(f"database name {name!r}: use 1 to 63 of a-z, 0-9, _")
    return name


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _fetch(dsn: str, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)
    try:
        return [tuple(row) for row in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


class _AdminMixin:
    """Database administration over asyncpg, shared by private and external servers."""

    def dsn(self, dbname: str = "postgres") -> str:
        raise NotImplementedError

    def create_database(self, name: str) -> None:
        """CREATE DATABASE name (UTF8, from template0)."""
        dsn = self.dsn()
        sql = f"CREATE DATABASE {check_dbname(name)} TEMPLATE template0 ENCODING 'UTF8'"
        run_coroutine(lambda: _execute(dsn, sql))

    def drop_database(self, name: str) -> None:
        """DROP DATABASE name, closing the connections still open to it."""
        dsn = self.dsn()
        sql = f"DROP DATABASE IF EXISTS {check_dbname(name)} WITH (FORCE)"
        run_coroutine(lambda: _execute(dsn, sql))

    def query(self, sql: str, *args: Any, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement in `dbname` and return its rows as tuples."""
        dsn = self.dsn(dbname)
        return run_coroutine(lambda: _fetch(dsn, sql, args))


class PrivatePostgres(_AdminMixin):
    """A PostgreSQL cluster of our own: initdb into a temporary directory, then run it.

    `start()` on a free port (kept across restarts), `stop(mode)`, `restart(mode)`,
    `kill()` (SIGKILL, as a crash), `close()` (stop and delete everything).
    """

    private = True

    def __init__(
        self,
        *,
        bin_dir: Path | None = None,
        log_path: Path | None = None,
        user: str | None = None,
    ) -> None:
        self.bin_dir = bin_dir if bin_dir is not None else find_postgres_bin()
        self.user = user if user is not None else default_run_as()
        self.base_dir = Path(tempfile.mkdtemp(prefix="chatd-pg-"))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_path = log_path if log_path is not None else self.base_dir / "postgres.log"
        self.port: int | None = None
        self._proc: Any = None  # subprocess.Popen of the postmaster while it runs
        self._initialised = False

    # -- life cycle ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """The postmaster's pid, as its postmaster.pid file gives it."""
        text = (self.data_dir / "postmaster.pid").read_text()
        return int(text.splitlines()[0])

    def _env(self) -> dict[str, str]:
        # PG* variables of the developer's shell must not steer our cluster.
        return {k: v for k, v in os.environ.items() if not k.startswith("PG")}

    def _initdb(self) -> None:
        self.socket_dir.mkdir()
        if self.user is not None:
            uid, gid = account_ids(self.user)
            for path in (self.base_dir, self.socket_dir):
                os.chown(path, uid, gid)
        run_as(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                # Only initdb's own writes skip fsync; the server below runs with fsync on.
                "--no-sync",
                "--no-instructions",
            ],
            user=self.user,
            env=self._env(),
            cwd=self.base_dir,
        )
        self._initialised = True

    def _argv(self, port: int) -> list[str]:
        return [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(port),
            "-c",
            f"listen_addresses={LOOPBACK}",
            "-c",
            f"unix_socket_directories={self.socket_dir}",
            # Durability as in production, stated so no default can change it.
            "-c",
            "fsync=on",
            "-c",
            "synchronous_commit=on",
            "-c",
            "full_page_writes=on",
            "-c",
            "max_connections=200",
            "-c",
            "logging_collector=off",
            "-c",
            "log_line_prefix=%m [%p] ",
        ]

    def _ready(self) -> bool:
        """Whether postmaster.pid says "ready" (as pg_ctl -w checks) and the port answers."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return False
        assert self.port is not None
        return len(lines) >= 8 and lines[7].strip() == "ready" and port_accepts(self.port)

    def start(self) -> None:
        """Start the cluster (initdb first, the first time) and wait until it accepts."""
        if self.running:
            return
        if not self._initialised:
            self._initdb()
        fresh_port = self.port is None
        attempts = START_ATTEMPTS if fresh_port else 1
        for attempt in range(attempts):
            if fresh_port:
                self.port = free_port()
            assert self.port is not None
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._proc = spawn(
                self._argv(self.port),
                log_path=self.log_path,
                env=self._env(),
                cwd=self.base_dir,
                user=self.user,
                # If the test run dies, an immediate shutdown still cleans up shared memory.
                death_signal=signal.SIGQUIT,
            )
            deadline = time.monotonic() + START_TIMEOUT
            while not self._ready():
                if self._proc.poll() is not None:
                    break
                if time.monotonic() >= deadline:
                    stop_process(self._proc, signal.SIGQUIT, STOP_TIMEOUT)
                    self._proc = None
                    raise RuntimeError(
                        f"PostgreSQL did not accept connections on port {self.port} within "
                        f"{START_TIMEOUT}s; log {self.log_path}:\n{log_tail(self.log_path)}"
                    )
                time.sleep(0.02)
            else:
                return
            code = self._proc.returncode
            self._proc = None
            with open(self.log_path, errors="replace") as log:
                log.seek(offset)
                this_start = log.read()
            if "could not bind" in this_start and attempt + 1 < attempts:
                continue
            raise RuntimeError(
                f"PostgreSQL exited with code {code} at start; log {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            )

    def stop(self, mode: ShutdownMode = "fast") -> None:
        """Shut down as `pg_ctl stop -m MODE` would, and reap the postmaster."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        children = children_of(proc.pid)
        stop_process(proc, _SHUTDOWN_SIGNALS[mode], STOP_TIMEOUT)
        for child in children:  # only left over when the postmaster had to be SIGKILLed
            send_signal(child, signal.SIGKILL)
        wait_gone(children, KILL_TIMEOUT)

    def kill(self) -> None:
        """Crash the whole server: SIGKILL the postmaster and every backend at once.

        The next start runs crash recovery from the WAL, as after a power loss.
        """
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        postmaster = self.pid
        assert postmaster == proc.pid, "postmaster.pid names another process"
        children = children_of(postmaster)
        send_signal(postmaster, signal.SIGKILL)
        for child in children:
            send_signal(child, signal.SIGKILL)
        reap(proc, KILL_TIMEOUT)
        wait_gone([postmaster, *children], KILL_TIMEOUT)

    def restart(self, mode: ShutdownMode = "fast") -> None:
        """Stop with `mode`, then start again on the same port."""
        self.stop(mode)
        self.start()

    def close(self) -> None:
        """Stop the cluster and delete its files."""
        self.stop("immediate")
        shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- addresses -------------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq-style URL, for asyncpg."""
        return f"postgresql://{SUPERUSER}@{LOOPBACK}:{self.port}/{dbname}"

    def url(self, dbname: str = "postgres") -> str:
        """The SQLAlchemy URL chatd takes as database.url."""
        return f"postgresql+asyncpg://{SUPERUSER}@{LOOPBACK}:{self.port}/{dbname}"


class ExternalPostgres(_AdminMixin):
    """A PostgreSQL server that runs already (CHATD_TEST_PG_URL); never stopped by us."""

    private = False

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres", "postgresql+asyncpg"):
            raise ValueError(f"CHATD_TEST_PG_URL={url}: expected postgresql://USER@HOST:PORT/DB")
        self._parts = parts._replace(scheme="postgresql")

    def dsn(self, dbname: str = "postgres") -> str:
        return urllib.parse.urlunsplit(self._parts._replace(path=f"/{dbname}"))

    def url(self, dbname: str = "postgres") -> str:
        return urllib.parse.urlunsplit(
            self._parts._replace(scheme="postgresql+asyncpg", path=f"/{dbname}")
        )

    def close(self) -> None:
        """Nothing to do: the server is not ours."""
