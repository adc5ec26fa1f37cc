"""A node that dies (kill -9) or stops (SIGTERM) in the middle of a send stream: no
acked message is lost, members on the other node get everything, and the node's own
clients move to the other node and resume with `sync`, with no gap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from clusterkit import (
    CLOSE_TIMEOUT_S,
    DELIVERY_TIMEOUT_S,
    POLL_S,
    Member,
    Pair,
    Stream,
    check_acked_stored,
    check_holds_exactly,
    check_live_exactly_once,
    join_room,
    make_members,
    resend,
    start_stream,
    truth,
    unique,
    wait_live_complete,
)
from support.wait import async_wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

# Members on each node.
PER_NODE = 4
# Sends per second of each sender, and the most each may send.
RATE = 60.0
MOST = 2000
# Acks each sender has before the node goes away.
ACKED_BEFORE = 60
# Seconds within which SIGTERM must end a node, with exit code 0 (PROTOCOL.md: 10).
SIGTERM_EXIT_S = 10.0


async def _room_over_two_nodes(pair: Pair) -> tuple[list[Member], list[Member], int]:
    node1, node2 = pair.nodes
    stay = await make_members(pair.db_url, "stay", PER_NODE)
    moving = await make_members(pair.db_url, "move", PER_NODE)
    await asyncio.gather(*(m.connect(node1) for m in stay), *(m.connect(node2) for m in moving))
    conv = await join_room(stay + moving, unique("Sturdy "))
    return stay, moving, conv


async def _streams_under_way(stay: list[Member], moving: list[Member], conv: int) -> list[Stream]:
    streams = [
        start_stream(stay[0].client, conv, count=MOST, rate=RATE),
        start_stream(moving[0].client, conv, count=MOST, rate=RATE),
    ]
    await async_wait_until(
        lambda: all(len(s.acked) >= ACKED_BEFORE for s in streams), DELIVERY_TIMEOUT_S, POLL_S
    )
    return streams


async def _move_and_resume(
    pair: Pair, stay: list[Member], moving: list[Member], conv: int, streams: list[Stream]
) -> None:
    """The moved clients reconnect to node 1 and sync; the moved sender sends again what
    got no ack (same cmids); node 1's sender stops. Then everyone must hold everything."""
    node1 = pair.nodes[0]
    staying, moved = streams
    await moved.wait()  # it stopped by itself: its connection closed
    for m in moving:
        client = await m.connect(node1)
        await m.catch_up(conv, client)
    await resend(moving[0].client, moved.unanswered)
    assert not moved.unanswered, f"resent without ack: {moved.unanswered[:3]}"
    staying.stop.set()
    await staying.wait()
    assert not staying.unanswered, (
        f"sends on the surviving node without ack: {staying.unanswered[:3]}"
    )

    rows = await truth(stay[0].client, conv)  # storage, read through the surviving node
    check_acked_stored(streams, {conv: rows})
    await wait_live_complete(stay, conv, max(rows))
    for m in stay:  # never disconnected: everything live, once, in order, no sync
        check_live_exactly_once(m, conv, rows)
    await wait_live_complete(moving, conv, max(rows))
    for m in moving:
        check_holds_exactly(m, conv, rows)


async def test_kill_9_a_node_mid_stream(fresh_pair: Callable[..., Pair], redis_url: str) -> None:
    pair = fresh_pair(redis_url)
    node2 = pair.nodes[1]
    stay, moving, conv = await _room_over_two_nodes(pair)
    try:
        streams = await _streams_under_way(stay, moving, conv)
        node2.kill()
        node2.wait()
        await asyncio.gather(*(m.client.wait_closed(CLOSE_TIMEOUT_S) for m in moving))
        # The last message node 2 acked reaches node 1's members (a publish it never
        # made is found by the periodic check), before anyone sends again.
        last_acked = max(s.ack["seq"] for s in streams[1].acked if s.ack)
        await wait_live_complete(stay, conv, last_acked)
        await _move_and_resume(pair, stay, moving, conv, streams)
    finally:
        await asyncio.gather(*(m.close() for m in stay + moving))


async def test_sigterm_closes_1012_and_clients_resume_elsewhere(
    fresh_pair: Callable[..., Pair], redis_url: str
) -> None:
    pair = fresh_pair(redis_url)
    node2 = pair.nodes[1]
    stay, moving, conv = await _room_over_two_nodes(pair)
    try:
        streams = await _streams_under_way(stay, moving, conv)
        node2.terminate()
        codes = await asyncio.gather(*(m.client.wait_closed(CLOSE_TIMEOUT_S) for m in moving))
        assert codes == [1012] * len(moving), f"close codes on SIGTERM: {codes}"
        assert await asyncio.to_thread(node2.wait, SIGTERM_EXIT_S) == 0
        await _move_and_resume(pair, stay, moving, conv, streams)
    finally:
        await asyncio.gather(*(m.close() for m in stay + moving))
