"""Two nodes behave as one server: DMs and rooms across nodes, a member joining a busy
room on a node that had no member of it, kicks and login budgets across nodes.

The delivery tests run on Redis pub/sub and on a Redis Cluster (sharded pub/sub).
Nobody calls `sync` in them: live delivery alone must bring every message, once, in
seq order.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from clusterkit import (
    CLOSE_TIMEOUT_S,
    DELIVERY_TIMEOUT_S,
    LOGIN_FAILURES,
    PASSWORD,
    POLL_S,
    Member,
    Pair,
    check_acked_stored,
    check_live_exactly_once,
    connect_all,
    join_room,
    make_members,
    moderator_token,
    start_stream,
    truth,
    unique,
    wait_live_complete,
)
from support.wait import async_wait_until

from chatd.client import api

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

# Members of the room split over the two nodes, and how many of them send.
ROOM_MEMBERS = 20
ROOM_SENDERS_PER_NODE = 2
# Messages per sender and per second per sender in the delivery tests.
PER_SENDER = 60
SENDER_RATE = 40.0
# Seconds after the first join at which each joiner of the busy-room test joins.
JOIN_DELAYS_S = (0.0, 0.0, 0.005, 0.02, 0.1)
# Seconds within which a kick must close the user's connections on every node.
KICK_WITHIN_S = 1.0
# Seconds before the end of a minute in which the login test waits for the next one:
# its failures must fall in one window of the fixed-window budget.
LOGIN_WINDOW_MARGIN_S = 10


def _conv_before_msgs(member: Member, conv: int, client: int = 0) -> None:
    """On the connection, the conversation's `conv` frame comes before any of its msgs."""
    frames = member.clients[client].frames
    first_conv = next(
        (i for i, f in enumerate(frames) if f.get("t") == "conv" and f.get("conv") == conv), None
    )
    first_msg = next(
        (i for i, f in enumerate(frames) if f.get("t") == "msg" and f.get("conv") == conv), None
    )
    assert first_conv is not None, f"{member.username} never got the conv frame of {conv}"
    if first_msg is not None:
        assert first_conv < first_msg, f"{member.username}: a msg of {conv} came before its conv"


async def test_dm_across_nodes(pairs: Callable[..., Pair], broker_kind: str) -> None:
    pair = pairs(broker_kind)
    node1, node2 = pair.nodes
    alice, bob = await make_members(pair.db_url, "dm", 2)
    try:
        await alice.connect(node1)
        await bob.connect(node2)
        conv = int((await alice.client.request({"t": "dm.open", "user": bob.id}))["conv"])
        # Bob, on the other node, is told of the new DM (a push), and hears it from then on.
        await async_wait_until(lambda: bob.conv_pushes(conv), DELIVERY_TIMEOUT_S, POLL_S)
        streams = [
            start_stream(alice.client, conv, count=PER_SENDER * 2, rate=SENDER_RATE),
            start_stream(bob.client, conv, count=PER_SENDER * 2, rate=SENDER_RATE),
        ]
        for s in streams:
            await s.wait()
            assert not s.unanswered, f"sends without ack: {s.unanswered[:3]}"
        rows = await truth(alice.client, conv)
        assert len(rows) == PER_SENDER * 4
        check_acked_stored(streams, {conv: rows})
        await wait_live_complete([alice, bob], conv, max(rows))
        for m in (alice, bob):
            check_live_exactly_once(m, conv, rows)
        _conv_before_msgs(bob, conv)
    finally:
        await alice.close()
        await bob.close()


async def test_room_of_twenty_across_nodes(pairs: Callable[..., Pair], broker_kind: str) -> None:
    pair = pairs(broker_kind)
    members = await make_members(pair.db_url, "room", ROOM_MEMBERS)
    try:
        await connect_all(members, pair.nodes)  # even ones on node 1, odd ones on node 2
        conv = await join_room(members, unique("Room "))
        senders = members[: 2 * ROOM_SENDERS_PER_NODE]  # alternate nodes: two on each
        streams = [
            start_stream(m.client, conv, count=PER_SENDER, rate=SENDER_RATE) for m in senders
        ]
        for s in streams:
            await s.wait()
            assert not s.unanswered, f"sends without ack: {s.unanswered[:3]}"
        rows = await truth(members[0].client, conv)
        assert len(rows) == PER_SENDER * len(senders)
        check_acked_stored(streams, {conv: rows})
        await wait_live_complete(members, conv, max(rows))
        for m in members:
            check_live_exactly_once(m, conv, rows)
    finally:
        await asyncio.gather(*(m.close() for m in members))


async def test_join_a_busy_room_on_a_node_without_its_members(
    pairs: Callable[..., Pair], broker_kind: str
) -> None:
    """Node 2 serves nobody of the room; members join there while node 1's members talk.
    Each joiner gets every message after its join's last_seq, in order, with no sync.
    Joins come close together, so that later ones land while node 2 is still filling
    what the first one's subscription may have missed."""
    pair = pairs(broker_kind)
    node1, node2 = pair.nodes
    talkers = await make_members(pair.db_url, "talk", 2)
    joiners = await make_members(pair.db_url, "join", 5)
    try:
        for m in talkers:
            await m.connect(node1)
        for m in joiners:
            await m.connect(node2)
        room = unique("Busy ")
        conv = await join_room(talkers, room)
        streams = [
            start_stream(m.client, conv, count=PER_SENDER * 2, rate=SENDER_RATE * 2)
            for m in talkers
        ]
        # Into the stream before anyone on node 2 joins.
        await async_wait_until(
            lambda: sum(len(s.acked) for s in streams) >= 40, DELIVERY_TIMEOUT_S, POLL_S
        )
        joined: dict[int, int] = {}

        async def join(m: Member, delay: float) -> None:
            await asyncio.sleep(delay)  # staggering the joins, not waiting for an outcome
            reply = await m.client.request({"t": "room.join", "room": room})
            assert reply["conv"] == conv
            joined[m.id] = int(reply["last_seq"])

        await asyncio.gather(*(join(m, d) for m, d in zip(joiners, JOIN_DELAYS_S, strict=True)))
        for s in streams:
            await s.wait()
            assert not s.unanswered
        rows = await truth(talkers[0].client, conv)
        check_acked_stored(streams, {conv: rows})
        assert min(joined.values()) > 0 and max(joined.values()) < max(rows), (
            "the joins must land inside the stream"
        )
        await wait_live_complete(joiners + talkers, conv, max(rows))
        for m in talkers:
            check_live_exactly_once(m, conv, rows)
        for m in joiners:
            check_live_exactly_once(m, conv, rows, first=joined[m.id] + 1)
            _conv_before_msgs(m, conv)
    finally:
        await asyncio.gather(*(m.close() for m in talkers + joiners))


# -- moderation and budgets across nodes ----------------------------------------------------------


async def test_kick_closes_the_user_on_every_node(pairs: Callable[..., Pair]) -> None:
    pair = pairs("redis")
    node1, node2 = pair.nodes
    token = await moderator_token(pair)
    (target,) = await make_members(pair.db_url, "kicked", 1)
    try:
        await target.connect(node1)
        await target.connect(node2)
        await target.connect(node2)  # and a second connection on the same node
        started = time.monotonic()
        status, body = await api(
            node1.base_url,
            "POST",
            f"/api/mod/users/{target.id}/kick",
            {"reason": "calm down"},
            token=token,
        )
        assert status == 200, body
        # One connection on node 1 and two on node 2, counted across both nodes.
        assert body["sessions_closed"] == 3, body
        codes = await asyncio.gather(*(c.wait_closed(CLOSE_TIMEOUT_S) for c in target.clients))
        elapsed = time.monotonic() - started
        assert codes == [4003, 4003, 4003]
        assert elapsed <= KICK_WITHIN_S, f"the kick took {elapsed:.2f}s to close every connection"
        for c in target.clients:
            kicked = [f for f in c.frames if f.get("t") == "kicked"]
            assert kicked and kicked[-1].get("reason") == "calm down"
        # A kick leaves the token valid: the user may come back, on either node.
        again = await target.connect(node2)
        assert again.ready["user"]["id"] == target.id
    finally:
        await target.close()


async def test_login_failures_add_up_across_nodes(pairs: Callable[..., Pair]) -> None:
    """Two failures on each node reach the limit of four: the right password is then
    refused on either node (a node count must not multiply a budget)."""
    # Each attempt comes "from" an address of its own (the pair trusts loopback as a
    # proxy), so that only the account's budget is shared between them.
    pair = pairs("redis")
    node1, node2 = pair.nodes
    (member,) = await make_members(pair.db_url, "login", 1)
    # The budget is a fixed one-minute window: all attempts must fall in one.
    into_minute = time.time() % 60
    if into_minute > 60 - LOGIN_WINDOW_MARGIN_S:
        await asyncio.sleep(60.5 - into_minute)  # waiting for the clock, not for an outcome

    async def login(node_url: str, password: str, address: str) -> tuple[int, object]:
        return await api(
            node_url,
            "POST",
            "/api/login",
            {"username": member.username, "password": password},
            headers={"X-Forwarded-For": address},
        )

    for i, node in enumerate((node1, node1, node2)):
        status, body = await login(node.base_url, "wrong-password!", f"10.1.0.{i + 1}")
        assert status == 401, (i, status, body)
    # One short of the limit, the right password still gets in.
    status, body = await login(node1.base_url, PASSWORD, "10.2.0.1")
    assert status == 200, body
    status, body = await login(node2.base_url, "wrong-password!", "10.1.0.4")
    assert status == 401, body
    for i, node in enumerate((node1, node2)):
        status, body = await login(node.base_url, PASSWORD, f"10.2.0.{i + 2}")
        assert status == 429, f"right password after {LOGIN_FAILURES} failures: {status} {body}"
        assert isinstance(body, dict) and body["error"]["code"] == "rate_limited"


async def test_a_block_made_on_one_node_holds_on_the_other(
    pairs: Callable[..., Pair],
) -> None:
    """Nodes cache block states on the DM send path; a block made through another node
    must still stop the next send (the cache is emptied through the user channels)."""
    pair = pairs("redis")
    node1, node2 = pair.nodes
    alice, bob = await make_members(pair.db_url, "blk", 2)
    try:
        await alice.connect(node1)
        await bob.connect(node2)
        conv = int((await alice.client.request({"t": "dm.open", "user": bob.id}))["conv"])
        await async_wait_until(lambda: bob.conv_pushes(conv), DELIVERY_TIMEOUT_S, POLL_S)
        # Both nodes now hold "not blocked" for the pair.
        await alice.client.send(conv, "before the block")
        await bob.client.send(conv, "before the block too")
        assert (await alice.client.request({"t": "block", "user": bob.id}))["t"] == "ok"

        async def refused() -> bool:
            reply = await bob.client.request(
                {"t": "send", "conv": conv, "text": "after", "cmid": uuid.uuid4().hex},
                raise_error=False,
            )
            return reply.get("code") == "blocked"

        # The block event travels through Redis: wait for it with a deadline, then it holds.
        await async_wait_until(refused, DELIVERY_TIMEOUT_S, POLL_S)
        assert await refused()
        assert (await alice.client.request({"t": "unblock", "user": bob.id}))["t"] == "ok"
        await async_wait_until(lambda: _sends(bob.client, conv), DELIVERY_TIMEOUT_S, POLL_S)
    finally:
        await alice.close()
        await bob.close()


async def _sends(client: Any, conv: int) -> bool:
    reply = await client.request(
        {"t": "send", "conv": conv, "text": "after unblock", "cmid": uuid.uuid4().hex},
        raise_error=False,
    )
    return reply.get("t") == "ack"
