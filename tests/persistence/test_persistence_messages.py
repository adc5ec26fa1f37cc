"""Reading messages: history pages, lookups, removal that keeps the row, the chain check."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import text

from persistence.conversations import ConversationStore
from persistence.database import Database
from persistence.messages import MessageStore
from persistence.records import User
from persistence.writer import GroupCommitWriter

AddUser = Callable[..., Awaitable[User]]


async def _conversation_with(db: Database, add_user: AddUser, count: int) -> tuple[int, User]:
    alice = await add_user("alice")
    joined = await ConversationStore(db).join_room("r", "R", alice.id, 1, create=True)
    assert joined is not None
    writer = GroupCommitWriter(db)
    await writer.start()
    try:
        for n in range(1, count + 1):
            await writer.append(
                sender_id=alice.id,
                sender_username=alice.username,
                conv_id=joined[0].id,
                cmid=f"c{n}",
                text=f"message {n}",
                ts=1000 + n,
            )
    finally:
        await writer.stop()
    return joined[0].id, alice


async def test_history_pages(db: Database, add_user: AddUser) -> None:
    conv, alice = await _conversation_with(db, add_user, 7)
    store = MessageStore(db)
    page, more = await store.history(conv, 0, 3)
    assert [m.seq for m in page] == [1, 2, 3] and more
    assert page[0].text == "message 1" and page[0].sender_username == "alice"
    assert page[0].sender_id == alice.id and page[0].ts == 1001 and page[0].cmid == "c1"
    page, more = await store.history(conv, 3, 3)
    assert [m.seq for m in page] == [4, 5, 6] and more
    page, more = await store.history(conv, 6, 3)
    assert [m.seq for m in page] == [7] and not more
    page, more = await store.history(conv, 4, 3)
    assert [m.seq for m in page] == [5, 6, 7] and not more  # exactly the rest: no more
    assert await store.history(conv, 7, 3) == ([], False)
    with pytest.raises(ValueError):
        await store.history(conv, 0, 0)


async def test_lookups(db: Database, add_user: AddUser) -> None:
    conv, alice = await _conversation_with(db, add_user, 2)
    store = MessageStore(db)
    by_cmid = await store.by_cmid(alice.id, "c2")
    assert by_cmid is not None and by_cmid.seq == 2 and by_cmid.conv == conv
    assert await store.by_id(by_cmid.id) == by_cmid
    assert await store.by_cmid(alice.id, "nope") is None
    assert await store.by_id(by_cmid.id + 100) is None


async def test_removal_keeps_the_row_and_marks_it(db: Database, add_user: AddUser) -> None:
    conv, alice = await _conversation_with(db, add_user, 3)
    mod = await add_user("mod", role="moderator")
    store = MessageStore(db)
    target = await store.by_cmid(alice.id, "c2")
    assert target is not None and not target.removed
    assert await store.remove(target.id, mod.id, "grooming", now=5000)
    assert not await store.remove(target.id, mod.id, "again", now=5001)  # once only
    assert not await store.remove(target.id + 100, mod.id, "no such", now=5002)

    page, _ = await store.history(conv, 0, 10)
    assert [(m.seq, m.removed) for m in page] == [(1, False), (2, True), (3, False)]
    assert page[1].text == "message 2"  # the text stays for the case
    removed = await store.by_id(target.id)
    assert removed is not None and removed.removed
    async with db.read() as conn:
        row = (
            await conn.execute(text("SELECT by_user, reason, ts, conv_id FROM message_removals"))
        ).one()
    assert tuple(row) == (mod.id, "grooming", 5000, conv)
    assert await store.verify(conv) is None  # a removal changes no message row


async def test_verify_finds_altered_text(db: Database, add_user: AddUser) -> None:
    conv, _ = await _conversation_with(db, add_user, 4)
    store = MessageStore(db)
    assert await store.verify(conv) is None
    # Alter a row behind the append-only trigger's back, as an attacker with the file would.
    async with db.write() as conn:
        if db.dialect == "sqlite":
            await conn.exec_driver_sql("DROP TRIGGER messages_no_update")
        else:
            await conn.exec_driver_sql("ALTER TABLE messages DISABLE TRIGGER USER")
        await conn.exec_driver_sql("UPDATE messages SET text = 'forged' WHERE seq = 3")
        if db.dialect == "postgresql":
            await conn.exec_driver_sql("ALTER TABLE messages ENABLE TRIGGER USER")
    assert await store.verify(conv) == 3
