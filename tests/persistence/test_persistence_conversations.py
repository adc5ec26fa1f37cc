"""DMs, rooms, membership, blocks; get-or-create races, also across two engines."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from persistence.blocks import BlockStore
from persistence.conversations import ConversationStore
from persistence.database import Database
from persistence.records import Member, User
from persistence.writer import GroupCommitWriter

AddUser = Callable[..., Awaitable[User]]

# Concurrent callers in the race tests.
RACERS = 20


async def test_dm_is_the_same_from_either_side(db: Database, add_user: AddUser) -> None:
    convs = ConversationStore(db)
    alice, bob = await add_user("alice"), await add_user("bob")
    first, created = await convs.open_dm(alice.id, bob.id, 100)
    assert created
    assert first.kind == "dm" and first.title is None and first.last_seq == 0
    assert first.members == (Member(alice.id, "alice"), Member(bob.id, "bob"))
    again, created_again = await convs.open_dm(bob.id, alice.id, 200)
    assert not created_again and again == first
    assert await convs.dm_between(bob.id, alice.id) == first.id
    assert await convs.dm_between(alice.id, alice.id + 50) is None


async def test_dm_open_race_across_two_engines(
    db: Database, db_url: str, add_user: AddUser
) -> None:
    alice, bob = await add_user("alice"), await add_user("bob")
    other = await Database.connect(db_url)
    try:
        stores = [ConversationStore(db), ConversationStore(other)]
        results = await asyncio.gather(
            *(
                stores[i % 2].open_dm(*((alice.id, bob.id) if i % 3 else (bob.id, alice.id)), i)
                for i in range(RACERS)
            )
        )
    finally:
        await other.close()
    assert len({conv.id for conv, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert await ConversationStore(db).member_ids(results[0][0].id) == [alice.id, bob.id]


async def test_count_dm_partners_since(db: Database, add_user: AddUser) -> None:
    convs = ConversationStore(db)
    alice, bob, carol = await add_user("alice"), await add_user("bob"), await add_user("carol")
    await convs.open_dm(alice.id, bob.id, 100)
    await convs.open_dm(alice.id, carol.id, 200)
    await convs.open_dm(bob.id, alice.id, 300)  # reopened: not new
    await convs.open_dm(carol.id, bob.id, 300)  # carol's, not alice's
    assert await convs.count_dm_partners_since(alice.id, 0) == 2
    assert await convs.count_dm_partners_since(alice.id, 150) == 1
    assert await convs.count_dm_partners_since(bob.id, 0) == 0


async def test_room_get_or_create_race(db: Database, db_url: str, add_user: AddUser) -> None:
    users = [await add_user(f"user{i}") for i in range(RACERS)]
    other = await Database.connect(db_url)
    try:
        stores = [ConversationStore(db), ConversationStore(other)]
        results = await asyncio.gather(
            *(
                stores[i % 2].join_room("café", "Café", user.id, i, create=True)
                for i, user in enumerate(users)
            )
        )
    finally:
        await other.close()
    rooms = [r for r in results if r is not None]
    assert len(rooms) == RACERS
    assert len({conv.id for conv, _ in rooms}) == 1
    assert all(joined for _, joined in rooms)
    convs = ConversationStore(db)
    room = await convs.get(rooms[0][0].id)
    assert room is not None and room.kind == "room" and room.title == "Café"
    assert [m.id for m in room.members] == sorted(u.id for u in users)


async def test_join_without_create_and_leave(db: Database, add_user: AddUser) -> None:
    convs = ConversationStore(db)
    alice, bob = await add_user("alice"), await add_user("bob")
    assert await convs.join_room("ghost", "Ghost", alice.id, 1, create=False) is None
    made = await convs.join_room("lobby", "Lobby", alice.id, 1, create=True)
    assert made is not None and made[1]
    room = made[0]
    joined = await convs.join_room("lobby", "LOBBY", bob.id, 2, create=False)
    assert joined is not None and joined[1] and joined[0].title == "Lobby"
    again = await convs.join_room("lobby", "Lobby", bob.id, 3, create=True)
    assert again is not None and not again[1]

    assert await convs.is_member(room.id, bob.id)
    assert await convs.leave(room.id, bob.id)
    assert not await convs.leave(room.id, bob.id)
    assert not await convs.is_member(room.id, bob.id)
    assert await convs.member_ids(room.id) == [alice.id]

    dm, _ = await convs.open_dm(alice.id, bob.id, 4)
    assert not await convs.leave(dm.id, bob.id)  # a DM is never left
    assert await convs.member_ids(dm.id) == [alice.id, bob.id]


async def test_for_user_and_ahead_of(db: Database, add_user: AddUser) -> None:
    convs = ConversationStore(db)
    alice, bob, carol = await add_user("alice"), await add_user("bob"), await add_user("carol")
    dm, _ = await convs.open_dm(alice.id, bob.id, 1)
    room = await convs.join_room("r", "R", alice.id, 2, create=True)
    assert room is not None
    await convs.join_room("r", "R", carol.id, 3, create=True)
    await convs.open_dm(bob.id, carol.id, 4)

    mine = await convs.for_user(alice.id)
    assert [c.id for c in mine] == [dm.id, room[0].id]
    assert mine[0].members == (Member(alice.id, "alice"), Member(bob.id, "bob"))
    assert mine[1].members == (Member(alice.id, "alice"), Member(carol.id, "carol"))
    assert mine[1].title == "R"
    assert await convs.for_user(alice.id + 100) == []
    assert await convs.ahead_of({dm.id: 0, room[0].id: 0, 999: 0}) == {}
    assert await convs.ahead_of({}) == {}
    assert await convs.last_seq(999) == 0
    assert await convs.get(999) is None


async def test_blocks(db: Database, add_user: AddUser) -> None:
    blocks = BlockStore(db)
    alice, bob, carol = await add_user("alice"), await add_user("bob"), await add_user("carol")
    assert not await blocks.blocked_between(alice.id, bob.id)
    await blocks.block(alice.id, bob.id, 1)
    await blocks.block(alice.id, bob.id, 2)  # idempotent
    assert await blocks.blocked_between(alice.id, bob.id)
    assert await blocks.blocked_between(bob.id, alice.id)  # either direction
    assert not await blocks.blocked_between(alice.id, carol.id)
    assert await blocks.blocked_by(alice.id) == [bob.id]
    await blocks.unblock(bob.id, alice.id)  # bob never blocked alice: nothing changes
    assert await blocks.blocked_between(alice.id, bob.id)
    await blocks.unblock(alice.id, bob.id)
    assert not await blocks.blocked_between(alice.id, bob.id)


async def test_block_partners_names_both_directions(db: Database, add_user: AddUser) -> None:
    blocks = BlockStore(db)
    alice, bob, carol, dave = [await add_user(n) for n in ("alice", "bob", "carol", "dave")]
    assert await blocks.block_partners(alice.id) == set()
    await blocks.block(alice.id, bob.id, 1)  # alice blocks bob
    await blocks.block(carol.id, alice.id, 2)  # carol blocks alice
    await blocks.block(bob.id, dave.id, 3)  # not alice's
    assert await blocks.block_partners(alice.id) == {bob.id, carol.id}
    assert await blocks.block_partners(bob.id) == {alice.id, dave.id}


async def test_ahead_of_names_only_conversations_past_the_known_seq(
    db: Database, add_user: AddUser
) -> None:
    convs = ConversationStore(db)
    alice, bob = await add_user("alice"), await add_user("bob")
    dm, _ = await convs.open_dm(alice.id, bob.id, 1)
    joined = await convs.join_room("r", "R", alice.id, 2, create=True)
    assert joined is not None
    room = joined[0]
    writer = GroupCommitWriter(db)
    await writer.start()
    try:
        for n in range(3):
            await writer.append(
                sender_id=alice.id,
                sender_username="alice",
                conv_id=room.id,
                cmid=f"c{n}",
                text="hi",
                ts=3 + n,
            )
    finally:
        await writer.stop()
    assert await convs.ahead_of({dm.id: 0, room.id: 0}) == {room.id: 3}
    assert await convs.ahead_of({dm.id: 0, room.id: 2}) == {room.id: 3}
    assert await convs.ahead_of({dm.id: 0, room.id: 3}) == {}
    # Many at once: one statement, whatever the count.
    many = {room.id: 1, **{10_000 + n: 0 for n in range(5_000)}}
    assert await convs.ahead_of(many) == {room.id: 3}
