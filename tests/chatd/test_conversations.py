"""DMs, rooms, membership pushes and blocks (PROTOCOL.md section 3)."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any

import pytest
from chatkit import Kit, collect_msgs, join_room, roundtrip, unique_name
from support.server import ServerProcess

from chatd.client import ChatClient, RequestError


async def _refused(client: ChatClient, frame: dict[str, Any], code: str) -> dict[str, Any]:
    with pytest.raises(RequestError) as caught:
        await client.request(frame)
    assert caught.value.code == code, caught.value.frame
    return caught.value.frame


# -- DMs ---------------------------------------------------------------------------------------


async def test_dm_open_by_id_and_by_username_gives_one_conversation_from_both_sides(
    kit: Kit,
) -> None:
    alice, bob = await kit.accounts(2)
    a, b = await kit.connect(alice), await kit.connect(bob)
    by_id = await a.request({"t": "dm.open", "user": bob.id})
    by_name = await b.request({"t": "dm.open", "user": alice.username.upper()})
    again = await a.request({"t": "dm.open", "user": bob.username})
    assert by_id["t"] == by_name["t"] == again["t"] == "conv"
    assert by_id["conv"] == by_name["conv"] == again["conv"]
    assert by_id["kind"] == "dm"
    assert sorted(m["id"] for m in by_id["members"]) == sorted([alice.id, bob.id])
    assert {m["username"] for m in by_id["members"]} == {alice.username, bob.username}
    assert by_id["last_seq"] == 0
    # Both sides list exactly that one DM.
    for who in (alice, bob):
        status, body = await kit.api("GET", "/api/conversations", token=who.token)
        assert status == 200
        assert [c["conv"] for c in body["conversations"]] == [by_id["conv"]]


async def test_dm_title_is_the_other_members_username(kit: Kit) -> None:
    alice, bob = await kit.accounts(2)
    a, b = await kit.connect(alice), await kit.connect(bob)
    reply = await a.request({"t": "dm.open", "user": bob.id})
    assert reply["title"] == bob.username
    pushed = await b.next_push("conv")
    assert pushed["conv"] == reply["conv"] and pushed["title"] == alice.username
    assert "rid" not in pushed  # a push, not a reply
    for who, other in ((alice, bob), (bob, alice)):
        fresh = await kit.connect(who)
        (conv,) = fresh.ready["conversations"]
        assert conv["title"] == other.username


async def test_the_other_members_connections_get_conv_before_the_first_msg(kit: Kit) -> None:
    alice, bob = await kit.accounts(2)
    a1, a2 = await kit.connect(alice), await kit.connect(alice)
    b1, b2 = await kit.connect(bob), await kit.connect(bob, codec="json")
    reply = await a1.request({"t": "dm.open", "user": bob.id})
    conv = reply["conv"]
    # Send at once: the push and the message race, and the push must win on every connection.
    await a1.send(conv, "first")
    for client in (a2, b1, b2):
        (msg,) = await collect_msgs(client, conv, 1)
        assert msg["text"] == "first" and msg["seq"] == 1
        kinds = [(f["t"], f.get("conv")) for f in client.frames]
        assert ("conv", conv) in kinds, f"no conv push: {kinds}"
        assert kinds.index(("conv", conv)) < kinds.index(("msg", conv))
        push = next(f for f in client.frames if f["t"] == "conv")
        assert "rid" not in push and push["kind"] == "dm"
    # The asking connection got its reply and no push besides.
    assert [f for f in a1.frames if f["t"] == "conv"] == [reply]


async def test_dm_open_with_oneself_or_nobody_is_refused(kit: Kit) -> None:
    me = await kit.account()
    client = await kit.connect(me)
    error = await _refused(client, {"t": "dm.open", "user": me.id}, "invalid")
    assert error["field"] == "user"
    await _refused(client, {"t": "dm.open", "user": unique_name("ghost")}, "not_found")
    await _refused(client, {"t": "dm.open", "user": 2**62}, "not_found")
    await roundtrip(client)


# -- rooms -------------------------------------------------------------------------------------


async def test_room_join_creates_a_room_named_without_regard_to_case_or_nfkc(kit: Kit) -> None:
    alice, bob, carol = await kit.accounts(3)
    a, b, c = await kit.connect(alice), await kit.connect(bob), await kit.connect(carol)
    suffix = unique_name("")
    name = f"Lobby {suffix}"
    created = await a.request({"t": "room.join", "room": name})
    assert created["kind"] == "room" and created["title"] == name
    assert created["last_seq"] == 0
    upper = await b.request({"t": "room.join", "room": f"  LOBBY {suffix.upper()} "})
    # The same name in fullwidth forms (U+FF01 to U+FF5E), which NFKC maps back.
    fullwidth = "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in name)
    assert fullwidth != name and unicodedata.normalize("NFKC", fullwidth) == name
    compat = await c.request({"t": "room.join", "room": fullwidth})
    assert created["conv"] == upper["conv"] == compat["conv"]
    assert upper["title"] == compat["title"] == name
    assert {m["id"] for m in compat["members"]} == {alice.id, bob.id, carol.id}
    # One room: a message reaches all three.
    await a.send(created["conv"], "hej")
    for client in (a, b, c):
        (msg,) = await collect_msgs(client, created["conv"], 1)
        assert msg["text"] == "hej"


async def test_joining_a_room_again_is_the_same_membership(kit: Kit) -> None:
    me = await kit.account()
    one, two = await kit.connect(me), await kit.connect(me)
    room = await join_room([one])
    assert (await two.next_push("conv"))["conv"] == room
    again = await one.request({"t": "room.join", "room": (await _title(one, room))})
    assert again["conv"] == room
    assert [m["id"] for m in again["members"]].count(me.id) == 1


async def _title(client: ChatClient, conv: int) -> str:
    fresh = [c for c in client.frames if c.get("t") == "conv" and c["conv"] == conv]
    return str(fresh[0]["title"])


async def test_without_open_creation_a_new_room_is_not_found(
    start_server: Callable[..., ServerProcess], make_kit: Callable[[ServerProcess], Kit]
) -> None:
    kit = make_kit(start_server(rooms_open_creation=False))
    me = await kit.account()
    client = await kit.connect(me)
    await _refused(client, {"t": "room.join", "room": "nowhere"}, "not_found")
    await roundtrip(client)
    status, body = await kit.api("GET", "/api/conversations", token=me.token)
    assert status == 200 and body["conversations"] == []


async def test_room_leave_answers_left_and_pushes_left_to_the_users_other_connections(
    kit: Kit,
) -> None:
    me, other = await kit.accounts(2)
    here, there = await kit.connect(me), await kit.connect(me, codec="json")
    stays = await kit.connect(other)
    room = await join_room([here, stays])
    await there.next_push("conv")
    reply = await here.request({"t": "room.leave", "conv": room})
    assert reply == {"t": "left", "conv": room, "rid": reply["rid"]}
    pushed = await there.next_push("left")
    assert pushed == {"t": "left", "conv": room}
    # No longer a member: neither connection may send or sync, the others go on.
    for client in (here, there):
        await _refused(client, {"t": "send", "conv": room, "text": "x", "cmid": "a"}, "not_member")
        await _refused(client, {"t": "sync", "conv": room}, "not_member")
    # What is said in the room after the leave no longer reaches the user; what is said
    # where they still are does (one node, so one order of pushes on each connection).
    elsewhere = await join_room([here, stays])
    assert (await there.next_push("conv"))["conv"] == elsewhere
    ack = await stays.send(room, "still here")
    assert ack["seq"] == 1
    await stays.send(elsewhere, "and here")
    for client in (here, there):
        (got,) = await collect_msgs(client, elsewhere, 1)
        assert got["text"] == "and here"
        assert not [f for f in client.frames if f.get("t") == "msg" and f["conv"] == room]
    status, body = await kit.api("GET", "/api/conversations", token=me.token)
    assert status == 200 and [c["conv"] for c in body["conversations"]] == [elsewhere]
    # Leaving a DM is not a thing; leaving what one is not in is not_member.
    dm = (await here.request({"t": "dm.open", "user": other.id}))["conv"]
    error = await _refused(here, {"t": "room.leave", "conv": dm}, "invalid")
    assert error["field"] == "conv"
    await _refused(here, {"t": "room.leave", "conv": room}, "not_member")


async def test_send_and_sync_outside_ones_conversations_are_not_member(kit: Kit) -> None:
    alice, bob, eve = await kit.accounts(3)
    a, e = await kit.connect(alice), await kit.connect(eve)
    dm = (await a.request({"t": "dm.open", "user": bob.id}))["conv"]
    room = await join_room([a])
    await a.send(dm, "private")
    for conv in (dm, room, 2**62):
        error = await _refused(
            e, {"t": "send", "conv": conv, "text": "hi", "cmid": f"e{conv}"}, "not_member"
        )
        assert error["cmid"] == f"e{conv}"
        await _refused(e, {"t": "sync", "conv": conv, "after": 0}, "not_member")
    assert not [f for f in e.frames if f.get("t") == "msg"]
    assert (await a.sync(dm))[1]["last_seq"] == 1  # nothing of eve's got in


# -- blocks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("blocker", ["alice", "bob", "both"])
async def test_while_either_blocks_the_other_their_dm_is_shut_and_unblock_restores_it(
    kit: Kit, blocker: str
) -> None:
    alice, bob = await kit.accounts(2)
    a, b = await kit.connect(alice), await kit.connect(bob)
    dm = (await a.request({"t": "dm.open", "user": bob.id}))["conv"]
    assert (await a.send(dm, "before"))["seq"] == 1
    blockers = {"alice": [(a, bob)], "bob": [(b, alice)], "both": [(a, bob), (b, alice)]}[blocker]
    for client, target in blockers:
        assert (await client.request({"t": "block", "user": target.username}))["t"] == "ok"
    for client, other in ((a, bob), (b, alice)):
        error = await _refused(
            client, {"t": "send", "conv": dm, "text": "blocked?", "cmid": unique_name()}, "blocked"
        )
        assert "cmid" in error
        await _refused(client, {"t": "dm.open", "user": other.id}, "blocked")
    # Unblocking all but one block keeps the DM shut.
    for client, target in blockers[:-1]:
        await client.request({"t": "unblock", "user": target.id})
        await _refused(a, {"t": "send", "conv": dm, "text": "x", "cmid": unique_name()}, "blocked")
    last_client, last_target = blockers[-1]
    assert (await last_client.request({"t": "unblock", "user": last_target.id}))["t"] == "ok"
    assert (await a.request({"t": "dm.open", "user": bob.id}))["conv"] == dm
    assert (await b.request({"t": "dm.open", "user": alice.username}))["conv"] == dm
    assert (await a.send(dm, "after a"))["seq"] == 2
    assert (await b.send(dm, "after b"))["seq"] == 3
    history = await b.sync_all(dm)
    assert [m["text"] for m in history] == ["before", "after a", "after b"]


async def test_a_block_prevents_a_new_dm_being_opened(kit: Kit) -> None:
    alice, bob = await kit.accounts(2)
    a, b = await kit.connect(alice), await kit.connect(bob)
    await b.request({"t": "block", "user": alice.id})
    await _refused(a, {"t": "dm.open", "user": bob.id}, "blocked")
    await _refused(b, {"t": "dm.open", "user": alice.id}, "blocked")
    status, body = await kit.api("GET", "/api/conversations", token=alice.token)
    assert status == 200 and body["conversations"] == []
    error = await _refused(a, {"t": "block", "user": alice.id}, "invalid")
    assert error["field"] == "user"


async def test_blocks_do_not_touch_rooms(kit: Kit) -> None:
    alice, bob = await kit.accounts(2)
    a, b = await kit.connect(alice), await kit.connect(bob)
    room = await join_room([a, b])
    await a.request({"t": "block", "user": bob.id})
    await b.request({"t": "block", "user": alice.id})
    await a.send(room, "from alice")
    await b.send(room, "from bob")
    for client in (a, b):
        got = await collect_msgs(client, room, 2)
        assert [m["text"] for m in got] == ["from alice", "from bob"]
    # And a blocked pair can still join rooms together.
    other_room = await join_room([b, a])
    assert (await a.send(other_room, "still"))["seq"] == 1


async def test_block_state_read_at_connect_holds_and_follows_changes(kit: Kit) -> None:
    # At connect the node reads the block state of all the member's DMs at once.
    alice, bob = await kit.accounts(2)
    a = await kit.connect(alice)
    dm = (await a.request({"t": "dm.open", "user": bob.id}))["conv"]
    assert (await a.request({"t": "block", "user": bob.id}))["t"] == "ok"
    await a.close()
    a, b = await kit.connect(alice), await kit.connect(bob)  # the block exists already
    for client in (a, b):
        await _refused(
            client, {"t": "send", "conv": dm, "text": "x", "cmid": unique_name()}, "blocked"
        )
    assert (await a.request({"t": "unblock", "user": bob.id}))["t"] == "ok"
    assert (await b.send(dm, "after"))["seq"] == 1
    # Read at connect as not blocked, then blocked: the change still counts.
    c = await kit.connect(bob)
    assert (await a.request({"t": "block", "user": bob.id}))["t"] == "ok"
    await _refused(c, {"t": "send", "conv": dm, "text": "y", "cmid": unique_name()}, "blocked")
