"""Fixtures of the test harness: private PostgreSQL and Redis, chatd nodes, a browser.

Services start only when a test asks for them, each on a free port on 127.0.0.1, and
are stopped by pid at teardown. Logs and other leftovers of a test go to
test-artifacts/<test>/ at the repository root (ignored by git).

Browser tests (fixtures `browser`, `page`) are plain synchronous test functions: the
sync Playwright API runs its own event loop in this thread, so they are collected after
every other test (see pytest_collection_modifyitems) and must not call asyncio.run; use
support.aio.run_coroutine, which copes with a running loop.
"""

import itertools
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:  # `import support` in any pytest import mode
    sys.path.insert(0, str(TESTS_DIR))

from support.naming import artifact_name, database_name  # noqa: E402
from support.postgres import (  # noqa: E402
    ExternalPostgres,
    PostgresServer,
    PrivatePostgres,
    find_postgres_bin,
)
from support.redis import PrivateRedis, PrivateRedisCluster, find_redis_server  # noqa: E402
from support.server import SERVER_START_TIMEOUT, ServerProcess, StartServer, setting_env  # noqa: E402

REPO_ROOT = TESTS_DIR.parent
ARTIFACTS_ROOT = REPO_ROOT / "test-artifacts"

CHROMIUM_DEFAULT = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests may run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # No traffic but to 127.0.0.1: no update checks, field trials, sync or the like.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

_PG_FIXTURES = {"private_postgres", "restartable_postgres", "pg_url"}
_REDIS_FIXTURES = {"private_redis", "redis_url", "own_redis", "redis_cluster", "redis_cluster_url"}
_BROWSER_FIXTURES = {"browser", "page"}

# -- collection ------------------------------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by the services they use, and run browser tests last.

    Sync Playwright leaves its event loop running in the main thread for the whole
    session, which breaks every async test after it; hence browser tests go last.
    """
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _PG_FIXTURES:
            item.add_marker(pytest.mark.postgres)
        if names & _REDIS_FIXTURES:
            item.add_marker(pytest.mark.redis)
        if names & _BROWSER_FIXTURES:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: bool(set(getattr(item, "fixturenames", ())) & _BROWSER_FIXTURES))


def pytest_report_header(config: pytest.Config) -> list[str]:
    def where(find: Any) -> str:
        try:
            return str(find())
        except RuntimeError as exc:
            return f"MISSING ({exc})"

    postgres = os.environ.get("CHATD_TEST_PG_URL") or where(find_postgres_bin)
    chromium = os.environ.get("CHATD_TEST_CHROMIUM", CHROMIUM_DEFAULT)
    return [
        f"chatd harness: postgres {postgres}; redis {where(find_redis_server)}; "
        f"chromium {chromium}; artifacts {ARTIFACTS_ROOT}"
    ]


# -- files -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def artifacts_root() -> Path:
    ARTIFACTS_ROOT.mkdir(exist_ok=True)
    return ARTIFACTS_ROOT


@pytest.fixture
def artifacts_dir(request: pytest.FixtureRequest, artifacts_root: Path) -> Path:
    """test-artifacts/<test name>/, emptied at the start of the test; kept afterwards."""
    path = artifacts_root / artifact_name(request.node.nodeid)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# -- databases ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def private_postgres(artifacts_root: Path) -> Iterator[PostgresServer]:
    """The session's PostgreSQL: a private cluster, or the server at CHATD_TEST_PG_URL.

    Started the first time a test asks for it. Tests get databases of their own through
    `pg_url`; tests that stop or crash the server use `restartable_postgres`.
    """
    external = os.environ.get("CHATD_TEST_PG_URL")
    server: PostgresServer
    if external:
        server = ExternalPostgres(external)
    else:
        log_path = artifacts_root / "postgres.log"
        log_path.unlink(missing_ok=True)
        private = PrivatePostgres(log_path=log_path)
        private.start()
        server = private
    yield server
    server.close()


@pytest.fixture
def restartable_postgres(private_postgres: PostgresServer) -> Iterator[PrivatePostgres]:
    """The private cluster, for tests that stop, kill and restart it; up again afterwards."""
    if not isinstance(private_postgres, PrivatePostgres):
        pytest.skip(
            "needs a private PostgreSQL cluster to stop and restart; CHATD_TEST_PG_URL "
            "names a shared server, which tests must not restart"
        )
    yield private_postgres
    private_postgres.start()


@pytest.fixture
def pg_url(private_postgres: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database for this test (postgresql+asyncpg:// URL), dropped afterwards."""
    name = database_name(request.node.name)
    private_postgres.create_database(name)
    yield private_postgres.url(name)
    if isinstance(private_postgres, PrivatePostgres):
        private_postgres.start()  # a test may have left it stopped
    private_postgres.drop_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file for this test, as a sqlite+aiosqlite:// URL."""
    return f"sqlite+aiosqlite:///{tmp_path / 'chatd.db'}"


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)],
    ids=["sqlite", "postgres"],
)
def any_db_url(request: pytest.FixtureRequest) -> str:
    """The test runs twice: on a fresh SQLite file and on a fresh PostgreSQL database."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(fixture)
    return url


# -- Redis -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def private_redis(artifacts_root: Path) -> Iterator[PrivateRedis]:
    """The session's redis-server; `redis_url` empties it for each test."""
    log_path = artifacts_root / "redis.log"
    log_path.unlink(missing_ok=True)
    server = PrivateRedis(log_path=log_path)
    server.start()
    yield server
    server.close()


@pytest.fixture
def redis_url(private_redis: PrivateRedis) -> str:
    """redis://127.0.0.1:PORT of the session's Redis, after FLUSHALL."""
    private_redis.start()  # no-op unless a test left it stopped
    private_redis.flushall()
    return private_redis.url


@pytest.fixture
def own_redis(artifacts_dir: Path) -> Iterator[PrivateRedis]:
    """A redis-server for this test alone, which it may stop, kill and restart."""
    server = PrivateRedis(log_path=artifacts_dir / "redis.log")
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_cluster(artifacts_root: Path) -> Iterator[PrivateRedisCluster]:
    """A Redis Cluster of three masters and no replicas, for the session."""
    for old in artifacts_root.glob("redis-cluster-*.log"):
        old.unlink()
    cluster = PrivateRedisCluster(3, log_dir=artifacts_root)
    cluster.start()
    yield cluster
    cluster.close()


@pytest.fixture
def redis_cluster_url(redis_cluster: PrivateRedisCluster) -> str:
    """redis+cluster://127.0.0.1:PORT of the session's cluster, every node flushed."""
    redis_cluster.start()  # brings back nodes a test left stopped
    redis_cluster.flushall()
    return redis_cluster.url


# -- chatd nodes -------------------------------------------------------------------------------


@pytest.fixture
def start_server(artifacts_dir: Path, tmp_path: Path) -> Iterator[StartServer]:
    """A factory of chatd nodes; every node it made is stopped at teardown.

    `start_server(db_url=None, broker_url="memory://", *, port=None, config_file=None,
    timeout=20, start=True, **env_overrides) -> ServerProcess`. `db_url` None gives the
    node a fresh SQLite file of its own; pass the same URL to several nodes to share a
    database. `env_overrides` are settings, as `limits_send_rate=5` or
    `CHATD_LIMITS_SEND_RATE="5"`. `start=False` returns the node unstarted (to test a
    start that must fail). Each node runs in tmp_path/nodeN and logs to
    test-artifacts/<test>/nodeN.log.
    """
    started: list[ServerProcess] = []
    numbers = itertools.count(1)

    def factory(
        db_url: str | None = None,
        broker_url: str = "memory://",
        *,
        port: int | None = None,
        config_file: Path | None = None,
        timeout: float = SERVER_START_TIMEOUT,
        start: bool = True,
        **env_overrides: object,
    ) -> ServerProcess:
        number = next(numbers)
        if db_url is None:
            db_url = f"sqlite+aiosqlite:///{tmp_path / f'node{number}.db'}"
        env = {"CHATD_DATABASE_URL": db_url, "CHATD_BROKER_URL": broker_url}
        env.update(setting_env(key, value) for key, value in env_overrides.items())
        node = ServerProcess(
            env,
            port=port,
            cwd=tmp_path / f"node{number}",
            log_path=artifacts_dir / f"node{number}.log",
            config_file=config_file,
        )
        started.append(node)
        if start:
            node.start(timeout)
        return node

    yield factory
    for node in reversed(started):
        node.close()


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    """One chatd node on a fresh SQLite file with the in-process broker."""
    return start_server()


# -- browser -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's, or CHATD_TEST_CHROMIUM) under sync Playwright.

    Only for plain synchronous test functions: sync Playwright cannot run inside a
    running asyncio loop, and its own loop stays running in this thread, which is why
    browser tests are collected last. Inside them use support.aio.run_coroutine, not
    asyncio.run.
    """
    executable = os.environ.get("CHATD_TEST_CHROMIUM", CHROMIUM_DEFAULT)
    if not Path(executable).exists():
        raise RuntimeError(
            f"Chromium not found at {executable}: install it (Debian: `apt-get install "
            "chromium`) or set CHATD_TEST_CHROMIUM to its path"
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, artifacts_dir: Path) -> Iterator[Any]:
    """A fresh browser context and page for this test; a screenshot is kept on teardown."""
    context = browser.new_context()
    new_page = context.new_page()
    yield new_page
    try:
        if not new_page.is_closed():
            new_page.screenshot(path=str(artifacts_dir / "last-page.png"))
    except PlaywrightError as exc:  # a missing screenshot must not fail the test
        print(f"no screenshot of the last page: {exc}")
    finally:
        context.close()
