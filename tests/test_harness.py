"""Tests of the test harness itself: waits, private PostgreSQL and Redis, node processes."""

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
import redis
from support.naming import artifact_name, database_name
from support.ports import free_port, port_accepts
from support.postgres import PostgresServer, PrivatePostgres
from support.procs import pid_alive
from support.redis import PrivateRedis, PrivateRedisCluster
from support.server import ServerProcess, setting_env
from support.wait import async_wait_until, wait_until

TESTS_DIR = Path(__file__).resolve().parent


# -- waits and ports ---------------------------------------------------------------------------


def test_wait_until_returns_the_first_truthy_value() -> None:
    values = iter([0, None, "", 7])
    assert wait_until(lambda: next(values), timeout=5) == 7


def test_wait_until_times_out_with_its_message() -> None:
    with pytest.raises(AssertionError, match=r"the moon is made of cheese: not true after 0.1s"):
        wait_until(lambda: False, timeout=0.1, message="the moon is made of cheese")


def test_wait_until_message_may_describe_the_state_at_failure() -> None:
    state = {"seen": 0}

    def check() -> bool:
        state["seen"] += 1
        return False

    with pytest.raises(AssertionError, match=r"checked [1-9]\d* times"):
        wait_until(check, timeout=0.1, message=lambda: f"checked {state['seen']} times")


def test_wait_until_ignores_only_the_exceptions_it_is_told_to() -> None:
    def refuse() -> bool:
        raise ConnectionRefusedError

    with pytest.raises(AssertionError, match="ConnectionRefusedError"):
        wait_until(refuse, timeout=0.1, ignore=(ConnectionRefusedError,))
    with pytest.raises(ConnectionRefusedError):
        wait_until(refuse, timeout=0.1)


async def test_async_wait_until_awaits_the_predicate_and_times_out() -> None:
    calls = 0

    async def ready() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return calls if calls >= 3 else 0

    assert await async_wait_until(ready, timeout=5) == 3
    with pytest.raises(AssertionError, match=r"never: not true after 0\.1s"):
        await async_wait_until(lambda: False, timeout=0.1, message="never")


def test_free_port_is_free_on_loopback() -> None:
    port = free_port()
    assert 0 < port < 65536
    assert not port_accepts(port)


def test_artifact_names_are_file_names() -> None:
    assert artifact_name("tests/chatd/test_hub.py::test_fan_out[postgres]") == (
        "chatd.test_hub.test_fan_out-postgres"
    )
    assert artifact_name("tests/test_x.py::TestA::test_b") == "test_x.TestA.test_b"


def test_database_names_are_unique_identifiers() -> None:
    first, second = database_name("test_x[Postgres-ä]"), database_name("test_x[Postgres-ä]")
    assert first != second
    assert all(re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name) for name in (first, second))
    assert len(database_name("t" * 100)) == 63


def test_settings_become_chatd_variables() -> None:
    assert setting_env("limits_send_rate", 5) == ("CHATD_LIMITS_SEND_RATE", "5")
    assert setting_env("database_auto_migrate", False) == ("CHATD_DATABASE_AUTO_MIGRATE", "false")
    assert setting_env("server_allowed_origins", ["http://a"]) == (
        "CHATD_SERVER_ALLOWED_ORIGINS",
        '["http://a"]',
    )
    assert setting_env("CHATD_BROKER_URL", "memory://") == ("CHATD_BROKER_URL", "memory://")


# -- PostgreSQL --------------------------------------------------------------------------------


def test_private_postgres_runs_durable_on_loopback(private_postgres: PostgresServer) -> None:
    if not isinstance(private_postgres, PrivatePostgres):
        pytest.skip("checks the private cluster's settings; CHATD_TEST_PG_URL names another")
    settings = {
        name: private_postgres.query(f"SHOW {name}")[0][0]
        for name in ("fsync", "synchronous_commit", "full_page_writes", "listen_addresses")
    }
    assert settings == {
        "fsync": "on",
        "synchronous_commit": "on",
        "full_page_writes": "on",
        "listen_addresses": "127.0.0.1",
    }


def test_pg_url_is_a_database_of_its_own(pg_url: str, private_postgres: PostgresServer) -> None:
    assert pg_url.startswith("postgresql+asyncpg://")
    dbname = pg_url.rsplit("/", 1)[1]
    private_postgres.query("CREATE TABLE t (v text)", dbname=dbname)
    private_postgres.query("INSERT INTO t VALUES ($1)", "ä", dbname=dbname)
    assert private_postgres.query("SELECT v FROM t", dbname=dbname) == [("ä",)]
    assert private_postgres.query("SHOW server_encoding", dbname=dbname) == [("UTF8",)]


def test_databases_are_created_and_dropped(private_postgres: PostgresServer) -> None:
    def names() -> set[str]:
        return {row[0] for row in private_postgres.query("SELECT datname FROM pg_database")}

    private_postgres.create_database("harness_roundtrip")
    assert "harness_roundtrip" in names()
    private_postgres.drop_database("harness_roundtrip")
    assert "harness_roundtrip" not in names()


async def test_postgres_admin_works_inside_a_running_loop(
    private_postgres: PostgresServer,
) -> None:
    assert private_postgres.query("SELECT 1") == [(1,)]


@pytest.mark.slow
def test_private_postgres_keeps_committed_data_across_restart_and_crash(
    restartable_postgres: PrivatePostgres, pg_url: str
) -> None:
    pg = restartable_postgres
    dbname = pg_url.rsplit("/", 1)[1]
    port = pg.port
    pg.query("CREATE TABLE kept (n int)", dbname=dbname)
    pg.query("INSERT INTO kept VALUES (1)", dbname=dbname)

    pg.restart("fast")
    assert pg.port == port
    pg.query("INSERT INTO kept VALUES (2)", dbname=dbname)

    postmaster = pg.pid
    pg.kill()
    assert not pid_alive(postmaster)
    assert not port_accepts(port or 0)
    pg.start()
    assert pg.port == port
    assert pg.query("SELECT n FROM kept ORDER BY n", dbname=dbname) == [(1,), (2,)]

    pg.restart("immediate")
    assert pg.query("SELECT count(*) FROM kept", dbname=dbname) == [(2,)]


# -- Redis -------------------------------------------------------------------------------------


def test_redis_url_gives_an_empty_private_redis(
    redis_url: str, private_redis: PrivateRedis
) -> None:
    assert redis_url == f"redis://127.0.0.1:{private_redis.port}"
    assert private_redis.command("DBSIZE") == 0
    private_redis.command("SET", "left-over", "1")
    assert private_redis.command("CONFIG", "GET", "save") == {b"save": b""}
    assert private_redis.command("CONFIG", "GET", "bind") == {b"bind": b"127.0.0.1"}


@pytest.mark.slow
def test_private_redis_restarts_on_the_same_port(own_redis: PrivateRedis) -> None:
    port = own_redis.port
    own_redis.command("SET", "k", "v")

    pid = own_redis.pid
    own_redis.kill()
    assert not pid_alive(pid)
    assert not port_accepts(port or 0)
    own_redis.start()
    assert own_redis.port == port
    assert own_redis.command("GET", "k") is None  # nothing is kept on disk

    own_redis.command("SET", "k", "v")
    own_redis.restart()
    assert own_redis.port == port
    assert own_redis.command("PING") is True


@pytest.mark.slow
def test_redis_cluster_has_three_masters_sharing_the_keys(
    redis_cluster_url: str, redis_cluster: PrivateRedisCluster
) -> None:
    first = redis_cluster.ports[0]
    assert redis_cluster_url == f"redis+cluster://127.0.0.1:{first}"
    client = redis.RedisCluster(host="127.0.0.1", port=first)
    try:
        for n in range(60):
            client.set(f"key{n}", n)
        assert len(client.get_primaries()) == 3
    finally:
        client.close()
    assert all(node.command("DBSIZE") > 0 for node in redis_cluster.nodes)


@pytest.mark.slow
@pytest.mark.redis
def test_services_die_with_the_test_process(tmp_path: Path) -> None:
    """A test run killed outright leaves no redis-server behind (parent-death signal)."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(TESTS_DIR)!r})
        from support.redis import PrivateRedis
        server = PrivateRedis()
        server.start()
        print(server.pid, flush=True)
        sys.stdin.read()  # hold on until killed
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert parent.stdout is not None
        redis_pid = int(parent.stdout.readline())
        assert pid_alive(redis_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        wait_until(lambda: not pid_alive(redis_pid), timeout=10, message="redis outlived us")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)


# -- node processes ----------------------------------------------------------------------------


class DummyServer(ServerProcess):
    """http.server in place of chatd: it serves the file `healthz` from its directory."""

    def command(self) -> list[str]:
        server = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1"]
        return [*server, "--directory", str(self.cwd), str(self.port)]


def _dummy(tmp_path: Path, artifacts_dir: Path) -> DummyServer:
    (tmp_path / "healthz").write_text("ok")
    return DummyServer({}, cwd=tmp_path, log_path=artifacts_dir / "dummy.log")


def test_server_process_runs_chatd_serve_with_a_hermetic_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATD_DATABASE_URL", "postgresql+asyncpg://leak@127.0.0.1/leak")
    monkeypatch.setenv("CHATD_TEST_CHROMIUM", "/usr/bin/chromium")
    node = ServerProcess(
        {"CHATD_BROKER_URL": "memory://"},
        port=8123,
        cwd=tmp_path,
        log_path=tmp_path / "log",
        config_file=tmp_path / "c.toml",
    )
    assert node.command() == [
        sys.executable,
        "-m",
        "chatd",
        "serve",
        "--config",
        str(tmp_path / "c.toml"),
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
    ]
    env = node.environment()
    assert "CHATD_DATABASE_URL" not in env
    assert env["CHATD_BROKER_URL"] == "memory://"
    assert env["CHATD_TEST_CHROMIUM"] == "/usr/bin/chromium"
    assert node.base_url == "http://127.0.0.1:8123"
    assert node.ws_url == "ws://127.0.0.1:8123/ws"


@pytest.mark.slow
def test_server_process_starts_restarts_and_stops(tmp_path: Path, artifacts_dir: Path) -> None:
    node = _dummy(tmp_path, artifacts_dir)
    try:
        node.start()
        with urllib.request.urlopen(node.base_url + "/healthz", timeout=5) as response:
            assert response.status == 200
        first_pid, port = node.pid, node.port

        node.restart()
        assert node.port == port and node.pid != first_pid
        assert not pid_alive(first_pid)

        node.terminate()
        assert node.wait(10) == -signal.SIGTERM
        node.start()
        node.kill()
        assert node.wait(10) == -signal.SIGKILL
        assert not port_accepts(port)
    finally:
        node.close()
    assert "GET /healthz" in (artifacts_dir / "dummy.log").read_text()


@pytest.mark.slow
def test_server_process_reports_an_early_exit_with_its_log(
    tmp_path: Path, artifacts_dir: Path
) -> None:
    class Crashing(ServerProcess):
        def command(self) -> list[str]:
            return [
                sys.executable,
                "-c",
                "import sys; print('bad value: limits.send_rate'); sys.exit(3)",
            ]

    node = Crashing({}, cwd=tmp_path, log_path=artifacts_dir / "crash.log")
    with pytest.raises(RuntimeError, match=r"(?s)exited with code 3.*limits\.send_rate"):
        node.start()
    assert not node.running


@pytest.mark.slow
def test_server_process_gives_up_on_a_silent_node(tmp_path: Path, artifacts_dir: Path) -> None:
    class Silent(ServerProcess):
        def command(self) -> list[str]:
            return [sys.executable, "-c", "import signal; signal.pause()"]

    node = Silent({}, cwd=tmp_path, log_path=artifacts_dir / "silent.log")
    with pytest.raises(RuntimeError, match="did not answer /healthz"):
        node.start(timeout=0.5)
    assert not node.running
    assert not pid_alive(node.pid)


# -- browser -----------------------------------------------------------------------------------


def test_playwright_drives_real_chromium(page: object, artifacts_dir: Path) -> None:
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    page.goto("data:text/html,<title>chatd</title><button onclick=\"this.textContent='ok'\">go")
    page.click("button")
    assert page.text_content("button") == "ok"
    assert page.title() == "chatd"
    user_agent = page.evaluate("navigator.userAgent")
    assert "HeadlessChrome" in user_agent or "Chromium" in user_agent
    assert os.path.isdir(artifacts_dir)
