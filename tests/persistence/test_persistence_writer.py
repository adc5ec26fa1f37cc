"""The group-commit writer: gapless seqs, cmid dedupe, failing alone, several nodes, the chain."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import text
from support.wait import async_wait_until

from persistence.chain import link_hash
from persistence.conversations import ConversationStore
from persistence.database import Database
from persistence.errors import AppendFailed, StorageUnavailable
from persistence.messages import MessageStore
from persistence.records import Message, User
from persistence.writer import AppendResult, GroupCommitWriter

AddUser = Callable[..., Awaitable[User]]

# Messages per appender in the concurrency test (10 appenders: 1,200 in all).
PER_APPENDER = 120
APPENDERS = 10
# Seconds a test waits for the writer's batch to queue behind a lock held by the test.
LOCK_WAIT_TIMEOUT_S = 10.0


@pytest.fixture
async def writer(db: Database) -> AsyncIterator[GroupCommitWriter]:
    w = GroupCommitWriter(db)
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


async def _room(db: Database, add_user: AddUser, *names: str) -> tuple[int, list[User]]:
    users = [await add_user(name) for name in names]
    convs = ConversationStore(db)
    conv = None
    for user in users:
        joined = await convs.join_room("lobby", "Lobby", user.id, 1, create=True)
        assert joined is not None
        conv = joined[0]
    assert conv is not None
    return conv.id, users


async def _send(
    w: GroupCommitWriter, sender: User, conv: int, cmid: str, text: str = "hi", ts: int = 5
) -> AppendResult:
    return await w.append(
        sender_id=sender.id,
        sender_username=sender.username,
        conv_id=conv,
        cmid=cmid,
        text=text,
        ts=ts,
    )


async def _all_messages(db: Database, conv: int) -> list[Message]:
    store = MessageStore(db)
    out: list[Message] = []
    after, more = 0, True
    while more:
        page, more = await store.history(conv, after, 500)
        out.extend(page)
        after = page[-1].seq if page else after
    return out


async def test_concurrent_appenders_get_gapless_seqs(
    db: Database, add_user: AddUser, writer: GroupCommitWriter
) -> None:
    names = [f"user{i}" for i in range(APPENDERS)]
    conv, senders = await _room(db, add_user, *names)

    async def appender(sender: User) -> list[AppendResult]:
        return [
            await _send(writer, sender, conv, f"m{n}", f"text {n}") for n in range(PER_APPENDER)
        ]

    results = await asyncio.gather(*(appender(s) for s in senders))
    total = APPENDERS * PER_APPENDER

    seqs = sorted(r.message.seq for rs in results for r in rs)
    assert seqs == list(range(1, total + 1))
    assert not any(r.duplicate for rs in results for r in rs)
    for rs in results:  # each appender waited for its ack: its own messages are in order
        assert [r.message.seq for r in rs] == sorted(r.message.seq for r in rs)

    stored = await _all_messages(db, conv)
    assert [m.seq for m in stored] == list(range(1, total + 1))
    ids = [m.id for m in stored]
    assert ids == sorted(ids) and len(set(ids)) == total  # id order is seq order
    assert await ConversationStore(db).last_seq(conv) == total
    assert await MessageStore(db).verify(conv) is None
    assert writer.stats.messages == total
    assert writer.stats.batches < total  # they were grouped


async def test_cmid_retry_returns_first_message_whatever_it_names(
    db: Database, add_user: AddUser, writer: GroupCommitWriter
) -> None:
    conv, (alice, bob) = await _room(db, add_user, "alice", "bob")
    convs = ConversationStore(db)
    dm, _ = await convs.open_dm(alice.id, bob.id, 2)

    first = await _send(writer, alice, conv, "c-1", "original", ts=10)
    retry = await _send(writer, alice, dm.id, "c-1", "something else", ts=99)
    assert not first.duplicate and retry.duplicate
    assert retry.message == first.message
    assert retry.message.conv == conv and retry.message.text == "original"

    # A cmid is per sender: bob may use the same one.
    bobs = await _send(writer, bob, conv, "c-1", "bob's")
    assert not bobs.duplicate and bobs.message.seq == first.message.seq + 1
    assert await convs.last_seq(dm.id) == 0


async def test_duplicate_cmids_in_one_batch_make_one_message(
    db: Database, add_user: AddUser, writer: GroupCommitWriter
) -> None:
    conv, (alice,) = await _room(db, add_user, "alice")
    batches_before = writer.stats.batches
    one, two = await asyncio.gather(
        _send(writer, alice, conv, "same", "first"), _send(writer, alice, conv, "same", "second")
    )
    assert writer.stats.batches == batches_before + 1  # both were in the one batch
    assert not one.duplicate and two.duplicate
    assert two.message == one.message and one.message.text == "first"
    assert await ConversationStore(db).last_seq(conv) == 1


async def _install_fail_trigger(db: Database) -> None:
    async with db.write() as conn:
        if db.dialect == "sqlite":
            await conn.exec_driver_sql(
                "CREATE TRIGGER test_fail_me BEFORE INSERT ON messages "
                "WHEN NEW.text = 'FAIL-ME' BEGIN SELECT RAISE(ABORT, 'refused FAIL-ME'); END"
            )
        else:
            await conn.exec_driver_sql(
                "CREATE FUNCTION test_fail_me() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.text = 'FAIL-ME' THEN RAISE EXCEPTION 'refused FAIL-ME'; END IF; "
                "RETURN NEW; END $$"
            )
            await conn.exec_driver_sql(
                "CREATE TRIGGER test_fail_me BEFORE INSERT ON messages "
                "FOR EACH ROW EXECUTE FUNCTION test_fail_me()"
            )


async def _drop_fail_trigger(db: Database) -> None:
    async with db.write() as conn:
        if db.dialect == "sqlite":
            await conn.exec_driver_sql("DROP TRIGGER test_fail_me")
        else:
            await conn.exec_driver_sql("DROP TRIGGER test_fail_me ON messages")
            await conn.exec_driver_sql("DROP FUNCTION test_fail_me()")


async def test_a_bad_message_fails_alone_and_takes_no_seq(
    db: Database, add_user: AddUser, writer: GroupCommitWriter
) -> None:
    conv, (alice, bob) = await _room(db, add_user, "alice", "bob")
    await _install_fail_trigger(db)
    try:
        retried_before = writer.stats.retried_batches
        outcomes = await asyncio.gather(
            _send(writer, alice, conv, "a1", "fine"),
            _send(writer, bob, conv, "b1", "FAIL-ME"),
            _send(writer, alice, conv, "a2", "also fine"),
            return_exceptions=True,
        )
        assert writer.stats.retried_batches == retried_before + 1
        ok1, bad, ok2 = outcomes
        assert isinstance(bad, AppendFailed) and "refused FAIL-ME" in str(bad)
        assert "INSERT" not in str(bad) and "also fine" not in str(bad)  # no SQL, no texts
        assert isinstance(ok1, AppendResult) and isinstance(ok2, AppendResult)
        assert (ok1.message.seq, ok2.message.seq) == (1, 2)

        after = await _send(writer, bob, conv, "b2", "next")
        assert after.message.seq == 3
        assert await MessageStore(db).by_cmid(bob.id, "b1") is None
        assert [m.text for m in await _all_messages(db, conv)] == ["fine", "also fine", "next"]
        assert await MessageStore(db).verify(conv) is None
    finally:
        await _drop_fail_trigger(db)


async def test_unknown_conversation_fails_alone(
    db: Database, add_user: AddUser, writer: GroupCommitWriter
) -> None:
    conv, (alice,) = await _room(db, add_user, "alice")
    good, bad = await asyncio.gather(
        _send(writer, alice, conv, "x1"),
        _send(writer, alice, 999_999, "x2"),
        return_exceptions=True,
    )
    assert isinstance(good, AppendResult) and good.message.seq == 1
    assert isinstance(bad, AppendFailed)


async def test_two_nodes_append_to_one_conversation(
    db: Database, db_url: str, add_user: AddUser
) -> None:
    """Two Database objects and writers, as two nodes on one database: still gapless."""
    conv, senders = await _room(db, add_user, *(f"user{i}" for i in range(6)))
    other_db = await Database.connect(db_url)
    writers = [GroupCommitWriter(db), GroupCommitWriter(other_db)]
    for w in writers:
        await w.start()
    try:

        async def appender(w: GroupCommitWriter, sender: User, tag: str) -> list[int]:
            return [(await _send(w, sender, conv, f"{tag}-{n}")).message.seq for n in range(100)]

        jobs = [appender(writers[i % 2], sender, f"n{i % 2}") for i, sender in enumerate(senders)]
        seqs = [seq for part in await asyncio.gather(*jobs) for seq in part]
    finally:
        for w in writers:
            await w.stop()
        await other_db.close()
    assert sorted(seqs) == list(range(1, len(senders) * 100 + 1))
    assert all(w.stats.messages > 0 for w in writers)
    assert await MessageStore(db).verify(conv) is None


async def test_stop_finishes_what_is_queued(db: Database, add_user: AddUser) -> None:
    conv, (alice,) = await _room(db, add_user, "alice")
    w = GroupCommitWriter(db, max_batch=8)
    await w.start()
    tasks = [asyncio.create_task(_send(w, alice, conv, f"q{n}")) for n in range(50)]
    await asyncio.sleep(0)  # let every task queue its append before the stop
    await w.stop()
    results = [t.result() for t in tasks]  # all done: stop() waited for them
    assert sorted(r.message.seq for r in results) == list(range(1, 51))
    with pytest.raises(StorageUnavailable):
        await _send(w, alice, conv, "late")


async def test_a_lone_message_does_not_wait_out_max_wait(db: Database, add_user: AddUser) -> None:
    conv, (alice,) = await _room(db, add_user, "alice")
    w = GroupCommitWriter(db, max_wait_ms=5_000)
    await w.start()
    try:
        await _send(w, alice, conv, "warm-up")
        started = time.monotonic()
        await _send(w, alice, conv, "lone")
        assert time.monotonic() - started < 2.5  # far below the 5 s it may linger at most
    finally:
        await w.stop()


async def test_unreachable_database_gives_storage_unavailable() -> None:
    down = await Database.connect("postgresql+asyncpg://postgres@127.0.0.1:1/nothing")
    w = GroupCommitWriter(down)
    await w.start()
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            await w.append(sender_id=1, sender_username="a", conv_id=1, cmid="c", text="t", ts=1)
        assert time.monotonic() - started < 10
        assert w.stats.failed == 1
    finally:
        await w.stop()
        await down.close()


async def test_chain_links_every_message(
    db: Database, add_user: AddUser, writer: GroupCommitWriter
) -> None:
    from persistence.chain import GENESIS_HASH, verify_chain

    conv, (alice,) = await _room(db, add_user, "alice")
    for n in range(5):
        await _send(writer, alice, conv, f"h{n}", f"text {n}")
    store = MessageStore(db)
    links = await store.chain(conv)
    assert [seq for seq, _, _ in links] == [1, 2, 3, 4, 5]
    assert links[0][1] == GENESIS_HASH
    assert all(links[i][1] == links[i - 1][2] for i in range(1, 5))
    assert verify_chain(links)
    assert not verify_chain([links[0], links[2]])  # a gap shows
    forged = [(*links[0][:2], "f" * 64), *links[1:]]
    assert not verify_chain(forged)


async def test_writer_recovers_after_its_connections_are_killed(
    db: Database, add_user: AddUser, writer: GroupCommitWriter
) -> None:
    """As after a PostgreSQL restart: pooled connections are dead, the next batch reconnects."""
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has no server to lose")
    conv, (alice,) = await _room(db, add_user, "alice")
    assert (await _send(writer, alice, conv, "before")).message.seq == 1
    killer = await Database.connect(str(db.engine.url.render_as_string(hide_password=False)))
    try:
        async with killer.write() as conn:
            killed = (
                await conn.exec_driver_sql(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        assert killed >= 1
    finally:
        await killer.close()
    assert (await _send(writer, alice, conv, "after")).message.seq == 2
    assert await MessageStore(db).verify(conv) is None


async def test_a_full_queue_refuses_with_storage_unavailable(
    db: Database, add_user: AddUser
) -> None:
    conv, (alice,) = await _room(db, add_user, "alice")
    w = GroupCommitWriter(db, max_queue=5)
    await w.start()
    try:
        # All ten queue in one turn of the loop, before the writer task takes any.
        outcomes = await asyncio.gather(
            *(_send(w, alice, conv, f"f{n}") for n in range(10)), return_exceptions=True
        )
    finally:
        await w.stop()
    assert [type(o) for o in outcomes] == [AppendResult] * 5 + [StorageUnavailable] * 5


async def test_a_batch_on_postgresql_is_four_round_trips(
    db: Database, add_user: AddUser, writer: GroupCommitWriter
) -> None:
    """BEGIN, lock and lookup, insert and counters, COMMIT: no pre-ping, nothing else."""
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has no round trips")
    conv, (alice, bob) = await _room(db, add_user, "alice", "bob")
    await _send(writer, alice, conv, "warm-up")
    queries: list[str] = []

    async def log_queries(conn: Any) -> None:
        conn.add_query_logger(lambda record: queries.append(record.query))

    # The writer's pool keeps one connection, which the writer takes for its next batches.
    await db.run_pg_write(log_queries)
    # asyncpg hands each record to the logger with call_soon, before the commit's outcome
    # wakes the appenders: by the time an append returns, its batch's queries are here.
    queries.clear()
    batches = writer.stats.batches
    one, two = await asyncio.gather(_send(writer, alice, conv, "a"), _send(writer, bob, conv, "b"))
    assert writer.stats.batches == batches + 1
    assert (one.message.seq, two.message.seq) == (2, 3)
    assert [q.split()[0] for q in queries] == ["BEGIN;", "WITH", "WITH", "COMMIT;"]
    assert "FOR UPDATE" in queries[1] and "JOIN messages" in queries[1]
    assert "INSERT INTO messages" in queries[2] and "UPDATE conversations" in queries[2]

    queries.clear()
    again = await _send(writer, alice, conv, "a")  # only a stored cmid: nothing to insert
    assert again.duplicate and again.message == one.message
    assert [q.split()[0] for q in queries] == ["BEGIN;", "WITH", "COMMIT;"]


async def test_a_cmid_committed_while_the_batch_waited_for_its_lock_is_not_stored_twice(
    db: Database, db_url: str, add_user: AddUser, writer: GroupCommitWriter
) -> None:
    """Another node commits alice's cmid while this batch waits for the counter lock: the
    batch's lookup, read before the wait, misses it; the unique (sender, cmid) constraint
    fails the batch, and redone one by one it answers with the other node's message."""
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL only: on SQLite a batch waits for the write lock at BEGIN")
    conv, (alice, bob) = await _room(db, add_user, "alice", "bob")
    await _send(writer, alice, conv, "warm-up")
    other = await Database.connect(db_url)

    async def waiting_for_lock() -> bool:
        async with db.read() as conn:
            waiting = await conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE 'WITH counters%'"
                )
            )
            return bool(waiting.scalar_one())

    try:
        async with other.write() as conn:  # the other node's batch, by hand
            counter = (
                await conn.execute(
                    text(
                        "SELECT last_seq, chain_head FROM conversations WHERE id = :id FOR UPDATE"
                    ),
                    {"id": conv},
                )
            ).one()
            seq, prev = counter.last_seq + 1, counter.chain_head
            head = link_hash(prev, conv, seq, alice.id, "race", "from the other node", 7)
            await conn.execute(
                text(
                    "INSERT INTO messages (conv_id, seq, sender_id, cmid, text, ts, hash, "
                    "prev_hash) VALUES (:conv, :seq, :sender, 'race', 'from the other node', "
                    "7, :head, :prev)"
                ),
                {"conv": conv, "seq": seq, "sender": alice.id, "head": head, "prev": prev},
            )
            await conn.execute(
                text("UPDATE conversations SET last_seq = :seq, chain_head = :head WHERE id = :id"),
                {"seq": seq, "head": head, "id": conv},
            )
            retried = writer.stats.retried_batches
            batches = writer.stats.batches
            # Both queue in this turn of the loop: one batch, which waits for the lock.
            race = asyncio.create_task(_send(writer, alice, conv, "race", "from this node"))
            bobs = asyncio.create_task(_send(writer, bob, conv, "b1", "bob's"))
            await async_wait_until(
                waiting_for_lock, LOCK_WAIT_TIMEOUT_S, message="the batch never waited"
            )
        # The other node has committed: the batch goes on.
        raced, bob_result = await race, await bobs
    finally:
        await other.close()
    assert writer.stats.batches == batches + 1
    assert writer.stats.retried_batches == retried + 1  # the path this test is about
    assert raced.duplicate
    assert (raced.message.seq, raced.message.text) == (2, "from the other node")
    assert not bob_result.duplicate and bob_result.message.seq == 3
    assert [m.cmid for m in await _all_messages(db, conv)] == ["warm-up", "race", "b1"]
    assert await ConversationStore(db).last_seq(conv) == 3
    assert await MessageStore(db).verify(conv) is None
