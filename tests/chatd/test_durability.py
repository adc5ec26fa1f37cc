"""Durable before visible, on SQLite and PostgreSQL: acked messages survive `kill -9`, the
storage is set up to make commits durable, and a message whose commit fails is never
delivered and takes no seq (PROTOCOL.md section 3, DESIGN.md)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
import websockets
from chatkit import Kit, assert_gapless, collect_msgs, join_room, roundtrip
from support.server import ServerProcess
from support.wait import async_wait_until

from chatd.client import ChatClient
from persistence.database import Database

# Sends kept in flight at once by the streaming client (so some are mid-commit at the kill).
IN_FLIGHT = 16
# Acked messages before the node is killed.
ACKED_BEFORE_KILL = 150
# Seconds for the stream to get that far, and for the sender to notice the crash.
STREAM_TIMEOUT_S = 60.0
RAISED_SEND_LIMITS = {"limits_send_rate": 100_000, "limits_send_burst": 100_000}
SQLITE_PREFIX = "sqlite+aiosqlite:///"
SQLITE_SYNCHRONOUS_FULL = "2"  # PRAGMA synchronous reads back FULL as 2
# Seconds the test's own SQLite connection waits for the node's write lock.
SQLITE_LOCK_TIMEOUT_S = 10.0

SQLITE_POISON = """
CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.text = 'poison'
BEGIN SELECT RAISE(ABORT, 'poison'); END;
"""
PG_POISON = """
CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.text = 'poison' THEN RAISE EXCEPTION 'poison'; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER poison BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION poison();
"""


def _sqlite_path(url: str) -> str:
    assert url.startswith(SQLITE_PREFIX), url
    return url[len(SQLITE_PREFIX) :]


def _pg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _execute(url: str, sql: str) -> None:
    """Runs SQL on the test's database beside the node, as an operator would."""
    if url.startswith(SQLITE_PREFIX):
        conn = sqlite3.connect(_sqlite_path(url), timeout=SQLITE_LOCK_TIMEOUT_S)
        try:
            conn.executescript(sql)
        finally:
            conn.close()
    else:
        pg = await asyncpg.connect(_pg_dsn(url))
        try:
            await pg.execute(sql)
        finally:
            await pg.close()


class Stream:
    """Sends numbered messages, IN_FLIGHT at a time, until the connection dies."""

    def __init__(self, client: ChatClient, conv: int) -> None:
        self.client, self.conv = client, conv
        self.sent: dict[str, str] = {}  # cmid -> text, in send order
        self.acks: dict[str, dict[str, Any]] = {}
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _one(self, window: asyncio.Semaphore, cmid: str) -> None:
        try:
            self.acks[cmid] = await self.client.send(self.conv, self.sent[cmid], cmid=cmid)
        except (ConnectionError, websockets.ConnectionClosed, TimeoutError):
            pass  # the node died with this one in flight
        finally:
            window.release()

    async def _run(self) -> None:
        window = asyncio.Semaphore(IN_FLIGHT)
        pending: list[asyncio.Task[None]] = []
        n = 0
        while not self.client.closed.is_set():
            await window.acquire()
            if self.client.closed.is_set():
                break
            cmid = f"d{n}"
            self.sent[cmid] = f"durable {n}"
            pending.append(asyncio.get_running_loop().create_task(self._one(window, cmid)))
            n += 1
        await asyncio.gather(*pending)


@pytest.mark.slow
async def test_every_acked_message_survives_kill_9_with_gapless_seqs(
    any_db_url: str,
    start_server: Callable[..., ServerProcess],
    make_kit: Callable[[ServerProcess], Kit],
) -> None:
    server = start_server(any_db_url, **RAISED_SEND_LIMITS)
    kit = make_kit(server)
    me, other = await kit.accounts(2)
    sender, listener = await kit.connect(me), await kit.connect(other)
    room = await join_room([sender, listener])

    stream = Stream(sender, room)
    await async_wait_until(
        lambda: len(stream.acks) >= ACKED_BEFORE_KILL or stream.task.done(),
        timeout=STREAM_TIMEOUT_S,
    )
    assert not stream.task.done(), "the stream ended before the kill"
    server.kill()
    assert server.wait() == -9
    await asyncio.wait_for(stream.task, STREAM_TIMEOUT_S)
    acked = dict(stream.acks)
    assert len(acked) >= ACKED_BEFORE_KILL
    assert len(stream.sent) > len(acked), "nothing was in flight at the kill"
    delivered = [f for f in listener.frames if f.get("t") == "msg"]

    server.start()
    again = await kit.connect(me)
    history = await again.sync_all(room)
    assert_gapless(history)
    stored = {m["cmid"]: m for m in history}
    assert len(stored) == len(history), "a cmid stored twice"
    for cmid, ack in acked.items():
        m = stored[cmid]
        assert (m["id"], m["seq"], m["text"]) == (ack["id"], ack["seq"], stream.sent[cmid])
    # What the listener got live was committed: it is stored as delivered.
    for m in delivered:
        assert stored[m["cmid"]]["id"] == m["id"] and stored[m["cmid"]]["seq"] == m["seq"]
    # The client resends what was not acked; each cmid ends up stored exactly once.
    for cmid in stream.sent:
        if cmid not in acked:
            ack = await again.send(room, stream.sent[cmid], cmid=cmid)
            if cmid in stored:
                assert ack["id"] == stored[cmid]["id"]
    final = await again.sync_all(room)
    assert_gapless(final)
    assert sorted(m["cmid"] for m in final) == sorted(stream.sent)

    await _assert_durability_settings(any_db_url)


async def _assert_durability_settings(url: str) -> None:
    if url.startswith(SQLITE_PREFIX):
        # WAL is a property of the file: read it with nothing of ours in between.
        conn = sqlite3.connect(_sqlite_path(url), timeout=SQLITE_LOCK_TIMEOUT_S)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        finally:
            conn.close()
        want = {"journal_mode": "wal", "synchronous": SQLITE_SYNCHRONOUS_FULL}
    else:
        # chatd must ask for synchronous_commit itself, whatever the database's default.
        dbname = url.rsplit("/", 1)[1]
        await _execute(url, f'ALTER DATABASE "{dbname}" SET synchronous_commit = off')
        want = {"synchronous_commit": "on"}
    db = await Database.connect(url)
    try:
        assert await db.durability_settings() == want
    finally:
        await db.close()


@pytest.mark.slow
async def test_a_message_whose_commit_fails_is_never_delivered_and_takes_no_seq(
    any_db_url: str,
    start_server: Callable[..., ServerProcess],
    make_kit: Callable[[ServerProcess], Kit],
) -> None:
    server = start_server(any_db_url, **RAISED_SEND_LIMITS)  # it has migrated the schema
    await _execute(any_db_url, SQLITE_POISON if any_db_url.startswith(SQLITE_PREFIX) else PG_POISON)
    kit = make_kit(server)
    alice, bob, carol = await kit.accounts(3)
    a, b = await kit.connect(alice), await kit.connect(bob)
    c = await kit.connect(carol, codec="json")
    room = await join_room([a, b, c])

    assert (await a.send(room, "before"))["seq"] == 1
    refused = await a.request(
        {"t": "send", "conv": room, "text": "poison", "cmid": "p0"}, raise_error=False
    )
    assert refused["t"] == "error" and refused["cmid"] == "p0"
    assert (await a.send(room, "after"))["seq"] == 2

    # Poison in the middle of a stream from two senders, so it shares group commits.
    frames = [
        (a if i % 2 else b, {"t": "send", "conv": room, "cmid": f"x{i}", "text": f"ok {i}"})
        for i in range(24)
    ]
    for i in (5, 6, 17):
        frames[i][1]["text"] = "poison"
    replies = await asyncio.gather(
        *(client.request(frame, raise_error=False) for client, frame in frames)
    )
    for (_, frame), reply in zip(frames, replies, strict=True):
        if frame["text"] == "poison":
            assert reply["t"] == "error" and reply["cmid"] == frame["cmid"], reply
        else:
            assert reply["t"] == "ack", reply
    acked = [r for r in replies if r["t"] == "ack"]
    assert sorted(r["seq"] for r in acked) == list(range(3, 3 + len(acked)))

    total = 2 + len(acked)
    for client in (a, b, c):
        got = await collect_msgs(client, room, total)
        assert_gapless(got)
        assert "poison" not in [m["text"] for m in got]
        await roundtrip(client)
    history = await c.sync_all(room)
    assert_gapless(history)
    assert len(history) == total and "poison" not in [m["text"] for m in history]
    for client in (a, b, c):
        assert not [f for f in client.frames if f.get("text") == "poison"]

    # The failed cmid was not taken: without the trigger it is stored, with the next seq.
    drop = "DROP TRIGGER poison" + ("" if any_db_url.startswith(SQLITE_PREFIX) else " ON messages")
    await _execute(any_db_url, drop)
    retry = await a.send(room, "poison", cmid="p0")
    assert retry["seq"] == total + 1
