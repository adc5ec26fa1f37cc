"""The chatd process: SIGTERM, bad configuration, `chatd migrate` and `chatd users`
(PROTOCOL.md section 7)."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from chatkit import PASSWORD, Kit, expect_closed, join_room
from support.ports import free_port, port_accepts
from support.server import REPO_ROOT, ServerProcess, hermetic_environ
from support.wait import async_wait_until

# Seconds a SIGTERM'd node has to exit (PROTOCOL.md section 7).
SIGTERM_EXIT_S = 10.0
# Seconds a command line run gets before the test calls it hung.
COMMAND_TIMEOUT_S = 60.0
SQLITE_PREFIX = "sqlite+aiosqlite:///"
# Seconds one probe of the port waits for a connection, and between probes.
PORT_PROBE_S = 0.05
POLL_S = 0.02
# Seconds to reap a node that has already exited.
REAP_S = 1.0


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    listened: bool  # whether the port given ever accepted a connection while it ran


async def chatd(*args: str, env: dict[str, str], cwd: Path, watch_port: int | None = None) -> Run:
    """Runs `python -m chatd ARGS` to its end with exactly these CHATD_* settings."""
    full = hermetic_environ()
    full["PYTHONPATH"] = str(REPO_ROOT)
    full.update(env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chatd",
        *args,
        env=full,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    done = asyncio.ensure_future(proc.communicate())
    listened = False
    deadline = time.monotonic() + COMMAND_TIMEOUT_S
    while not done.done():
        if watch_port is not None and await asyncio.to_thread(
            port_accepts, watch_port, timeout=PORT_PROBE_S
        ):
            listened = True
        if time.monotonic() > deadline:
            proc.kill()
            await done
            raise AssertionError(f"chatd {' '.join(args)} still ran after {COMMAND_TIMEOUT_S}s")
        await asyncio.wait([done], timeout=POLL_S)
    out, err = done.result()
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode(), listened)


# -- SIGTERM -----------------------------------------------------------------------------------


@pytest.mark.slow
async def test_sigterm_closes_every_connection_1012_and_exits_0_within_10_s(
    start_server: Callable[..., ServerProcess],
    make_kit: Callable[[ServerProcess], Kit],
    tmp_path: Path,
) -> None:
    db_url = f"{SQLITE_PREFIX}{tmp_path / 'term.db'}"
    server = start_server(db_url, limits_send_rate=100_000, limits_send_burst=100_000)
    kit = make_kit(server)
    accounts = await kit.accounts(3)
    clients = [
        await kit.connect(accounts[0]),
        await kit.connect(accounts[1], codec="json"),
        await kit.connect(accounts[2]),
        await kit.connect(accounts[2]),
    ]
    room = await join_room(clients)
    # Sends under way at the signal: what was acked must be committed.
    sender = clients[0]
    acks: list[dict[str, object]] = []

    async def stream() -> None:
        n = 0
        while not sender.closed.is_set():
            try:
                acks.append(await sender.send(room, f"m{n}", cmid=f"m{n}"))
            except Exception:
                return
            n += 1

    streaming = asyncio.create_task(stream())
    await async_wait_until(lambda: len(acks) >= 20, timeout=COMMAND_TIMEOUT_S)

    signalled = time.monotonic()
    server.terminate()
    for client in clients:
        await expect_closed(client, 1012, timeout=SIGTERM_EXIT_S)
    await async_wait_until(
        lambda: not server.running, timeout=SIGTERM_EXIT_S, message="node still runs"
    )
    took = time.monotonic() - signalled
    assert server.wait(timeout=REAP_S) == 0
    assert took < SIGTERM_EXIT_S
    await streaming
    stored = _stored_messages(db_url)
    for ack in acks:
        assert stored[str(ack["cmid"])] == ack["seq"]
    assert sorted(stored.values()) == list(range(1, len(stored) + 1))


def _stored_messages(db_url: str) -> dict[str, int]:
    conn = sqlite3.connect(db_url[len(SQLITE_PREFIX) :])
    try:
        return dict(conn.execute("SELECT cmid, seq FROM messages"))
    finally:
        conn.close()


# -- bad configuration ---------------------------------------------------------------------------


BAD_ENV: dict[str, tuple[dict[str, str], str]] = {
    "send_rate not a number": ({"CHATD_LIMITS_SEND_RATE": "abc"}, "CHATD_LIMITS_SEND_RATE"),
    "send_burst negative": ({"CHATD_LIMITS_SEND_BURST": "-1"}, "limits.send_burst"),
    "port 0": ({"CHATD_SERVER_PORT": "0"}, "server.port"),
    "boolean yes": ({"CHATD_ROOMS_OPEN_CREATION": "yes"}, "CHATD_ROOMS_OPEN_CREATION"),
    "list not JSON": ({"CHATD_SERVER_ALLOWED_ORIGINS": "a,b"}, "CHATD_SERVER_ALLOWED_ORIGINS"),
    "unknown key": ({"CHATD_LIMITS_SEND_RAT": "5"}, "CHATD_LIMITS_SEND_RAT"),
    "bad proxy": ({"CHATD_SERVER_TRUSTED_PROXIES": '["not-an-ip"]'}, "server.trusted_proxies"),
    "bad database url": ({"CHATD_DATABASE_URL": "mysql://x/y"}, "database.url"),
}

BAD_FILES: dict[str, tuple[str, str]] = {
    "unknown key": ("[limits]\nsend_rat = 5\n", "limits.send_rat"),
    "unknown section": ("[limitz]\nsend_rate = 5\n", "limitz"),
    "wrong type": ('[limits]\nsend_rate = "fast"\n', "limits.send_rate"),
    "port out of range": ("[server]\nport = 70000\n", "server.port"),
    "malformed TOML": ("[limits\nsend_rate = \n", "config.toml"),
}


async def _assert_refused_to_start(
    tmp_path: Path, env: dict[str, str], names: str, args: tuple[str, ...] = ()
) -> None:
    """The node exits non-zero naming the setting, and never listens on its port."""
    env = {"CHATD_DATABASE_URL": f"{SQLITE_PREFIX}{tmp_path / 'never.db'}", **env}
    port = None
    if names != "server.port":  # --port would override the bad port under test
        port = free_port()
        args = (*args, "--port", str(port))
    run = await chatd("serve", *args, env=env, cwd=tmp_path, watch_port=port)
    assert run.code != 0, run
    assert names in run.err, run.err
    assert not run.listened
    assert "Uvicorn running" not in run.out + run.err
    assert "Application startup" not in run.out + run.err
    assert not (tmp_path / "never.db").exists()  # it stopped before touching storage


@pytest.mark.parametrize("case", BAD_ENV.values(), ids=BAD_ENV.keys())
async def test_a_bad_setting_in_the_environment_stops_the_process_naming_the_key(
    tmp_path: Path, case: tuple[dict[str, str], str]
) -> None:
    env, names = case
    await _assert_refused_to_start(tmp_path, env, names)


@pytest.mark.parametrize("case", BAD_FILES.values(), ids=BAD_FILES.keys())
async def test_a_bad_config_file_stops_the_process_naming_the_key(
    tmp_path: Path, case: tuple[str, str]
) -> None:
    text, names = case
    config = tmp_path / "config.toml"
    config.write_text(text)
    await _assert_refused_to_start(tmp_path, {}, names, ("--config", str(config)))


async def test_a_missing_config_file_stops_the_process(tmp_path: Path) -> None:
    await _assert_refused_to_start(tmp_path, {}, "nothere.toml", ("--config", "nothere.toml"))


# -- chatd migrate and chatd users --------------------------------------------------------------


async def test_migrate_on_a_fresh_database_exits_0_and_makes_the_schema(
    any_db_url: str, tmp_path: Path
) -> None:
    env = {"CHATD_DATABASE_URL": any_db_url}
    assert await _tables(any_db_url) == set()
    run = await chatd("migrate", env=env, cwd=tmp_path)
    assert run.code == 0, run
    assert await _tables(any_db_url) >= {"users", "sessions", "conversations", "messages"}


async def _tables(url: str) -> set[str]:
    if url.startswith(SQLITE_PREFIX):
        conn = sqlite3.connect(url[len(SQLITE_PREFIX) :])
        try:
            return {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        finally:
            conn.close()
    pg = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        rows = await pg.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row["tablename"] for row in rows}
    finally:
        await pg.close()


@pytest.mark.slow
async def test_users_create_prints_the_id_refuses_a_taken_name_and_users_set_changes_the_role(
    tmp_path: Path,
    start_server: Callable[..., ServerProcess],
    make_kit: Callable[[ServerProcess], Kit],
) -> None:
    db_url = f"{SQLITE_PREFIX}{tmp_path / 'users.db'}"
    env = {"CHATD_DATABASE_URL": db_url}
    create = ("users", "create", "Mod_Mia", "--password", PASSWORD, "--birthdate", "1985-02-03")
    made = await chatd(*create, "--role", "moderator", env=env, cwd=tmp_path)
    assert made.code == 0, made
    user_id = int(made.out.strip())

    # Two refusals, run side by side: a taken name (in another case), an unknown user.
    taken, nobody = await asyncio.gather(
        chatd(
            *("users", "create", "mod_MIA", "--password", PASSWORD, "--birthdate", "1990-01-01"),
            env=env,
            cwd=tmp_path,
        ),
        chatd("users", "set", "nobody_here", "--role", "admin", env=env, cwd=tmp_path),
    )
    assert taken.code == 1 and "taken" in taken.err, taken
    assert taken.out.strip() == ""
    assert nobody.code == 1 and "nobody_here" in nobody.err, nobody

    kit = make_kit(start_server(db_url))
    login = {"username": "mod_mia", "password": PASSWORD}
    status, body = await kit.api("POST", "/api/login", login)
    assert status == 200
    assert body["user"] == {
        **body["user"],
        "id": user_id,
        "username": "Mod_Mia",
        "role": "moderator",
    }

    promoted = await chatd("users", "set", "Mod_Mia", "--role", "admin", env=env, cwd=tmp_path)
    assert promoted.code == 0, promoted
    status, body = await kit.api("POST", "/api/login", login)
    assert status == 200 and body["user"]["role"] == "admin"
    client = await kit.connect(body["token"])
    assert client.ready["user"]["role"] == "admin"
