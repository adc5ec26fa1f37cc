"""Messages: order and gapless seqs under concurrent senders, ack and msg, sync paging,
cmid idempotency and the send rate limit (PROTOCOL.md sections 3 and 5)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest
import websockets
from chatkit import (
    Kit,
    NodePool,
    assert_gapless,
    collect_msgs,
    errors_of,
    expect_closed,
    join_room,
    roundtrip,
)
from support.wait import async_wait_until

from chatd.client import ChatClient, RequestError

SENDERS = 4
MESSAGES_PER_SENDER = 260  # 1,040 messages in one conversation
IN_FLIGHT_PER_SENDER = 8  # sends a sender keeps awaiting their ack at once
# Seconds for the whole stream to reach every member.
STREAM_TIMEOUT_S = 90.0
SEND_BURST = 30  # the default limits.send_burst
SEND_RATE = 5  # the default limits.send_rate, per second
SENDS_AT_ONCE = 50  # far enough past the burst that the refill cannot cover them
# Seconds a refused send may take to go through when resent after its retry_after.
RESEND_TIMEOUT_S = 10.0


async def _send_stream(
    client: ChatClient, conv: int, label: str, count: int
) -> list[dict[str, Any]]:
    """Sends `count` messages, several in flight at once; returns their acks."""
    window = asyncio.Semaphore(IN_FLIGHT_PER_SENDER)

    async def one(i: int) -> dict[str, Any]:
        async with window:
            return await client.send(conv, f"{label} {i}", cmid=f"{label}-{i}")

    return list(await asyncio.gather(*(one(i) for i in range(count))))


@pytest.mark.slow
async def test_concurrent_senders_give_every_member_seq_1_to_n_once_in_order(kit: Kit) -> None:
    senders = [await kit.connect(a) for a in await kit.accounts(SENDERS)]
    listeners = [
        await kit.connect(await kit.account()),
        await kit.connect(await kit.account(), codec="json"),
    ]
    everyone = senders + listeners
    room = await join_room(everyone)
    total = SENDERS * MESSAGES_PER_SENDER

    receiving = [
        asyncio.create_task(collect_msgs(c, room, total, timeout=STREAM_TIMEOUT_S))
        for c in everyone
    ]
    acks_by_sender = await asyncio.gather(
        *(_send_stream(c, room, f"s{n}", MESSAGES_PER_SENDER) for n, c in enumerate(senders))
    )
    received = await asyncio.gather(*receiving)

    acks = [ack for acks in acks_by_sender for ack in acks]
    assert sorted(a["seq"] for a in acks) == list(range(1, total + 1))
    assert len({a["id"] for a in acks}) == total
    by_cmid = {a["cmid"]: a for a in acks}
    for msgs in received:
        assert_gapless(msgs)
        assert len(msgs) == total
        for m in msgs:
            ack = by_cmid[m["cmid"]]
            assert (m["id"], m["seq"], m["ts"]) == (ack["id"], ack["seq"], ack["ts"])
            label, i = m["cmid"].split("-")
            assert m["text"] == f"{label} {i}"
    # Nothing more than the N messages, and storage agrees.
    await roundtrip(listeners[0])
    assert len([f for f in listeners[0].frames if f.get("t") == "msg"]) == total
    history = await listeners[1].sync_all(room)
    assert [(m["id"], m["seq"]) for m in history] == [(m["id"], m["seq"]) for m in received[0]]


async def test_the_sender_gets_its_ack_and_its_own_msg_in_either_order(kit: Kit) -> None:
    me, other = await kit.accounts(2)
    sender, receiver = await kit.connect(me), await kit.connect(other)
    room = await join_room([sender, receiver])
    acks = await asyncio.gather(*(sender.send(room, f"m{i}") for i in range(20)))
    own = await collect_msgs(sender, room, 20)
    theirs = await collect_msgs(receiver, room, 20)
    assert_gapless(own)
    assert own == theirs
    for ack in acks:
        assert ack["t"] == "ack" and ack["conv"] == room
        assert set(ack) >= {"conv", "cmid", "id", "seq", "ts"}
    by_seq = {m["seq"]: m for m in own}
    for ack in acks:
        m = by_seq[ack["seq"]]
        assert (m["id"], m["cmid"], m["ts"]) == (ack["id"], ack["cmid"], ack["ts"])
        assert m["from"] == {"id": me.id, "username": me.username}
        assert m["conv"] == room and "rid" not in m


async def test_sync_pages_by_after_and_limit_and_says_whether_more_exist(kit: Kit) -> None:
    me, other = await kit.accounts(2)
    client, reader = await kit.connect(me), await kit.connect(other)
    room = await join_room([client, reader])
    acks = [await client.send(room, f"n{i}") for i in range(1, 26)]

    page, synced = await reader.sync(room, after=0, limit=10)
    assert [m["seq"] for m in page] == list(range(1, 11))
    assert synced["t"] == "synced" and synced["conv"] == room
    assert synced["last_seq"] == 25 and synced["more"] is True
    first = page[0]
    assert set(first) >= {"conv", "id", "seq", "from", "text", "ts", "cmid"}
    assert (first["id"], first["text"], first["cmid"]) == (acks[0]["id"], "n1", acks[0]["cmid"])
    assert first["from"] == {"id": me.id, "username": me.username}

    page, synced = await reader.sync(room, after=10, limit=10)
    assert [m["seq"] for m in page] == list(range(11, 21)) and synced["more"] is True
    page, synced = await reader.sync(room, after=20, limit=10)
    assert [m["seq"] for m in page] == list(range(21, 26)) and synced["more"] is False
    page, synced = await reader.sync(room, after=0, limit=25)
    assert len(page) == 25 and synced["more"] is False  # exactly the rest: no more
    page, synced = await reader.sync(room, after=25)
    assert page == [] and synced == {**synced, "last_seq": 25, "more": False}
    page, synced = await reader.sync(room, after=1000)
    assert page == [] and synced["last_seq"] == 25 and synced["more"] is False
    # No limit: the default page (100) holds all 25; no after: from the start.
    rid = "all"
    reader._collect[rid] = []
    done = await reader.request({"t": "sync", "conv": room, "rid": rid})
    assert [m["seq"] for m in reader._collect.pop(rid)] == list(range(1, 26))
    assert done["more"] is False and done["rid"] == rid


async def test_sync_of_an_empty_conversation(kit: Kit) -> None:
    me = await kit.account()
    client = await kit.connect(me)
    room = await join_room([client])
    page, synced = await client.sync(room)
    assert page == [] and synced["last_seq"] == 0 and synced["more"] is False


async def test_a_resent_cmid_gets_the_first_ack_and_makes_no_second_message(kit: Kit) -> None:
    me, other = await kit.accounts(2)
    client, receiver = await kit.connect(me), await kit.connect(other)
    room = await join_room([client, receiver])
    other_room = await join_room([client, receiver])
    cmid = uuid.uuid4().hex
    first = await client.send(room, "the original", cmid=cmid)
    again = await client.send(room, "the original", cmid=cmid)
    elsewhere = await client.send(other_room, "something else", cmid=cmid)
    for retry in (again, elsewhere):
        assert {k: retry[k] for k in ("conv", "cmid", "id", "seq", "ts")} == {
            k: first[k] for k in ("conv", "cmid", "id", "seq", "ts")
        }
    assert elsewhere["conv"] == room  # the ack names the first message's conversation
    # A fresh connection of the same account retries too: still the same message.
    later = await kit.connect(me)
    retry = await later.send(other_room, "third try", cmid=cmid)
    assert (retry["conv"], retry["id"], retry["seq"]) == (room, first["id"], first["seq"])

    assert [m["text"] for m in await receiver.sync_all(room)] == ["the original"]
    assert await receiver.sync_all(other_room) == []
    assert (await client.send(room, "next"))["seq"] == 2
    got = await collect_msgs(receiver, room, 2)
    assert [m["text"] for m in got] == ["the original", "next"]
    await roundtrip(receiver)
    live = [f for f in receiver.frames if f.get("t") == "msg" and "rid" not in f]
    assert Counter(f["cmid"] for f in live)[cmid] == 1


async def test_a_resent_cmid_naming_a_conversation_one_is_not_in_gets_the_first_ack(
    kit: Kit,
) -> None:
    me, stranger, third = await kit.accounts(3)
    client = await kit.connect(me)
    room = await join_room([client])
    theirs = (await (await kit.connect(stranger)).request({"t": "dm.open", "user": third.id}))[
        "conv"
    ]
    first = await client.send(room, "hello", cmid="retry-me")
    retry = await client.send(theirs, "sneaky", cmid="retry-me")
    assert (retry["conv"], retry["id"], retry["seq"]) == (room, first["id"], first["seq"])
    with pytest.raises(RequestError) as caught:
        await client.send(theirs, "sneaky", cmid="new-one")
    assert caught.value.code == "not_member"


async def test_the_same_cmid_sent_twice_at_once_makes_one_message(kit: Kit) -> None:
    me = await kit.account()
    one, two = await kit.connect(me), await kit.connect(me)
    room = await join_room([one])
    await two.next_push("conv")
    acks = await asyncio.gather(
        one.send(room, "first text", cmid="twice"),
        one.send(room, "second text", cmid="twice"),
        two.send(room, "third text", cmid="twice"),
    )
    assert len({(a["conv"], a["id"], a["seq"], a["ts"]) for a in acks}) == 1
    history = await one.sync_all(room)
    assert len(history) == 1 and history[0]["cmid"] == "twice"
    assert history[0]["text"] in ("first text", "second text", "third text")


async def test_cmids_are_per_sender(kit: Kit) -> None:
    alice, bob = await kit.accounts(2)
    a, b = await kit.connect(alice), await kit.connect(bob)
    room = await join_room([a, b])
    one = await a.send(room, "from alice", cmid="same")
    two = await b.send(room, "from bob", cmid="same")
    assert (one["seq"], two["seq"]) == (1, 2) and one["id"] != two["id"]
    assert [m["text"] for m in await a.sync_all(room)] == ["from alice", "from bob"]


@pytest.fixture
def default_kit(node_pool: NodePool, make_kit: Any) -> Kit:
    """A Kit on a node with every setting at its default (send_rate 5, send_burst 30)."""
    kit: Kit = make_kit(node_pool.get())
    return kit


async def test_past_the_burst_sends_are_rate_limited_with_retry_after_and_a_resend_goes_through(
    default_kit: Kit,
) -> None:
    kit = default_kit
    me = await kit.account()
    client = await kit.connect(me)
    room = await join_room([client])
    frames = [
        {"t": "send", "conv": room, "text": f"burst {i}", "cmid": f"b{i}"}
        for i in range(SENDS_AT_ONCE)
    ]
    replies = await asyncio.gather(*(client.request(f, raise_error=False) for f in frames))
    acked = [r for r in replies if r["t"] == "ack"]
    refused = [r for r in replies if r["t"] == "error"]
    assert len(acked) >= SEND_BURST, f"only {len(acked)} of a burst of {SEND_BURST} went through"
    assert refused, f"{SENDS_AT_ONCE} sends at once must pass a burst of {SEND_BURST}"
    assert len(acked) + len(refused) == SENDS_AT_ONCE
    for error in refused:
        assert error["code"] == "rate_limited"
        assert isinstance(error["retry_after"], int)
        assert 0 < error["retry_after"] <= 1000 // SEND_RATE + 1
        assert error["cmid"].startswith("b")
    # The client waits and resends the same cmid; it goes through, once.
    again = next(f for f in frames if f["cmid"] == refused[0]["cmid"])

    async def resend() -> dict[str, Any] | None:
        reply = await client.request(again, raise_error=False)
        return reply if reply["t"] == "ack" else None

    ack = await async_wait_until(
        resend, timeout=RESEND_TIMEOUT_S, interval=refused[0]["retry_after"] / 1000
    )
    assert ack["cmid"] == again["cmid"]
    history = await client.sync_all(room)
    assert_gapless(history)
    assert sorted(m["cmid"] for m in history) == sorted(
        [a["cmid"] for a in acked] + [again["cmid"]]
    )


async def test_refused_sends_reaching_twice_the_burst_close_4008(default_kit: Kit) -> None:
    kit = default_kit
    me = await kit.account()
    client = await kit.connect(me)
    bystander = await kit.connect(me)  # the account's other connection is not closed
    room = await join_room([client])
    for i in range(6 * SEND_BURST):
        if client.closed.is_set():
            break
        try:
            await client.send_frame({"t": "send", "conv": room, "text": "spam", "cmid": f"s{i}"})
        except websockets.ConnectionClosed:
            break
    await expect_closed(client, 4008)
    limited = [e for e in errors_of(client) if e["code"] == "rate_limited"]
    assert len(limited) == 2 * SEND_BURST
    assert all("retry_after" in e for e in limited)
    await roundtrip(bystander)
