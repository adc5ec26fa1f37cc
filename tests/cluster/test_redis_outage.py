"""Redis restarts in the middle of send streams across two nodes (the module's own
redis-server, killed and started again on the same port).

A short outage: every connected member ends with every acked message, gapless and
once, with no `sync`; a ban made while Redis was down closes the user on both nodes
once it is back. A long one (more than a page of messages in one conversation): the
members on the other node get a `conv` push, sync, and end with every message once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from clusterkit import (
    CLOSE_TIMEOUT_S,
    DELIVERY_TIMEOUT_S,
    POLL_S,
    Member,
    Pair,
    Stream,
    ban_in_database,
    check_acked_stored,
    check_holds_exactly,
    check_live_exactly_once,
    join_room,
    make_members,
    moderator_token,
    readyz,
    route_missing,
    start_stream,
    truth,
    unique,
    wait_live_complete,
)
from support.redis import PrivateRedis
from support.wait import async_wait_until

from chatd.client import api

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

# Seconds Redis stays down in the short run.
SHORT_OUTAGE_S = 1.5
# Sends per second of each sender in the short run: two senders per conversation stay
# far from a page (100) in the outage and the reconnect after it.
SHORT_RATE = 5.0
# The fill page: a gap longer than this is not replayed live (chatd.hub.FILL_PAGE).
PAGE = 100
# The long run: the sender's rate, and the messages committed while Redis is down (more
# than a page, so the other node cannot replay them live).
LONG_RATE = 150.0
LONG_OUTAGE_MESSAGES = 2 * PAGE
# Seconds the long outage lasts at least: past the hub's periodic check (2 s).
LONG_OUTAGE_MIN_S = 3.0
# Seconds to keep sending once Redis is back, so that live traffic follows the gap.
AFTER_S = 1.0
# Seconds for both nodes to notice Redis going away, and to reconnect after it returns
# (the reconnect backs off up to 5 s between attempts).
BROKER_STATE_TIMEOUT_S = 20.0


async def broker_state(pair: Pair, connected: bool) -> None:
    """Waits until /readyz of both nodes says the broker is (dis)connected; storage is
    up all along, so it stays 200 (a node rides out a broker outage)."""

    async def check() -> bool:
        for node in pair.nodes:
            status, body = await readyz(node)
            assert status == 200, f"/readyz during a broker outage: {status} {body}"
            if body["broker"] is not connected:
                return False
        return True

    await async_wait_until(check, BROKER_STATE_TIMEOUT_S, 0.1, message=f"broker={connected}")


def during(streams: list[Stream], start: float, end: float) -> int:
    """Acked messages committed between two times (time.time())."""
    return sum(1 for s in streams for x in s.acked if x.acked_at and start <= x.acked_at <= end)


def per_conv(streams: list[Stream], start: float, end: float) -> dict[int, int]:
    out: dict[int, int] = {}
    for s in streams:
        out[s.conv] = out.get(s.conv, 0) + during([s], start, end)
    return out


async def stop_streams(streams: list[Stream]) -> None:
    for s in streams:
        s.stop.set()
    for s in streams:
        await s.wait()
        assert not s.unanswered, (
            f"sends without ack: {[(x.cmid, x.error) for x in s.unanswered[:3]]}"
        )


async def ban(pair: Pair, user_id: int, mod_token: str | None) -> str:
    """Bans through the moderation API where it exists, else as it would in storage."""
    if mod_token is not None:
        status, body = await api(
            pair.nodes[0].base_url,
            "POST",
            f"/api/mod/users/{user_id}/ban",
            {"reason": "while redis was down"},
            token=mod_token,
        )
        assert status == 200, body
        return "api"
    await ban_in_database(pair.db_url, user_id)
    return "database"


async def test_short_redis_outage_loses_nothing_and_needs_no_sync(
    pairs: Callable[..., Pair],
) -> None:
    pair = pairs("own")
    redis = pair.redis
    assert redis is not None
    redis.start()  # a test before may have left it down
    node1, node2 = pair.nodes
    await broker_state(pair, True)
    has_ban_api = not await route_missing(node1.base_url, "/api/mod/users/1/ban")
    mod_token = await moderator_token(pair) if has_ban_api else None

    alice, bob = await make_members(pair.db_url, "sa", 2)
    room = await make_members(pair.db_url, "sr", 6)
    # One banned through the moderation API (when it exists), one straight in storage
    # (as a node that died mid-ban would leave it): either way no node heard of it.
    banned = await make_members(pair.db_url, "sb", 2)
    everyone = [alice, bob, *room, *banned]
    try:
        await alice.connect(node1)
        await bob.connect(node2)
        await asyncio.gather(*(m.connect(pair.nodes[i % 2]) for i, m in enumerate(room)))
        for m in banned:
            await m.connect(node1)
            await m.connect(node2)
        dm = int((await alice.client.request({"t": "dm.open", "user": bob.id}))["conv"])
        await async_wait_until(lambda: bob.conv_pushes(dm), DELIVERY_TIMEOUT_S, POLL_S)
        conv = await join_room(room, unique("Outage "))
        streams = [
            start_stream(alice.client, dm, count=10_000, rate=SHORT_RATE),
            start_stream(bob.client, dm, count=10_000, rate=SHORT_RATE),
            start_stream(room[0].client, conv, count=10_000, rate=SHORT_RATE),  # node 1
            start_stream(room[1].client, conv, count=10_000, rate=SHORT_RATE),  # node 2
        ]
        await async_wait_until(
            lambda: all(len(s.acked) >= 5 for s in streams), DELIVERY_TIMEOUT_S, POLL_S
        )
        pushes_before = {m.username: len(m.conv_pushes(c)) for m in room for c in (conv,)}

        down_at = time.time()
        redis.kill()
        await broker_state(pair, False)
        how = [await ban(pair, banned[0].id, mod_token), await ban(pair, banned[1].id, None)]
        await asyncio.sleep(SHORT_OUTAGE_S)  # the outage itself
        assert during(streams, down_at, time.time()) > 0, "no send was acked while Redis was down"
        redis.start()
        await broker_state(pair, True)
        back_at = time.time()
        # The ban reaches both nodes: each re-checks its sessions once Redis is back.
        for m, way in zip(banned, how, strict=True):
            codes = await asyncio.gather(*(c.wait_closed(CLOSE_TIMEOUT_S) for c in m.clients))
            assert codes == [4004, 4004], f"user banned by {way}: connections closed {codes}"

        await asyncio.sleep(AFTER_S)  # live traffic after the outage, at the senders' pace
        await stop_streams(streams)
        gained = per_conv(streams, down_at, back_at)
        assert max(gained.values()) < PAGE, f"the outage was meant to be short: {gained}"

        for c, members in ((dm, [alice, bob]), (conv, room)):
            rows = await truth(members[0].client, c)
            check_acked_stored([s for s in streams if s.conv == c], {c: rows})
            await wait_live_complete(members, c, max(rows))
            for m in members:
                check_live_exactly_once(m, c, rows)
        for m in room:
            assert len(m.conv_pushes(conv)) == pushes_before[m.username], "a gap became a push"
    finally:
        await asyncio.gather(*(m.close() for m in everyone))


async def follow_pushes(member: Member, conv: int, stop: asyncio.Event) -> int:
    """As a client does: on each `conv` push of the conversation, sync from what it holds.
    Returns how many pushes it acted on."""
    handled = len(member.conv_pushes(conv))
    acted = 0
    while not stop.is_set():
        pushes = member.conv_pushes(conv)
        if len(pushes) > handled:
            handled = len(pushes)
            acted += 1
            await member.catch_up(conv)
        await asyncio.sleep(POLL_S)  # a client's reaction loop, not a wait for an outcome
    return acted


async def test_long_redis_outage_pushes_conv_and_members_sync(
    pairs: Callable[..., Pair],
) -> None:
    pair = pairs("own")
    redis: PrivateRedis | None = pair.redis
    assert redis is not None
    redis.start()
    node1, node2 = pair.nodes
    await broker_state(pair, True)
    here = await make_members(pair.db_url, "lh", 3)  # node 1, with the sender
    there = await make_members(pair.db_url, "lt", 3)  # node 2: hears it through Redis
    followers: list[asyncio.Task[int]] = []
    stop_following = asyncio.Event()
    try:
        await asyncio.gather(*(m.connect(node1) for m in here), *(m.connect(node2) for m in there))
        conv = await join_room(here + there, unique("Flood "))
        followers = [
            asyncio.get_running_loop().create_task(follow_pushes(m, conv, stop_following))
            for m in there
        ]
        stream = start_stream(here[0].client, conv, count=100_000, rate=LONG_RATE)
        await async_wait_until(lambda: len(stream.acked) >= 20, DELIVERY_TIMEOUT_S, POLL_S)

        down_at = time.time()
        redis.kill()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await async_wait_until(
            lambda: (
                during([stream], down_at, time.time()) >= LONG_OUTAGE_MESSAGES
                and loop.time() - started >= LONG_OUTAGE_MIN_S
            ),
            DELIVERY_TIMEOUT_S * 2,
            POLL_S,
            message="the sender did not get its messages acked while Redis was down",
        )
        redis.start()
        await broker_state(pair, True)
        await asyncio.sleep(AFTER_S)  # live traffic after the outage, at the sender's pace
        await stop_streams([stream])

        rows = await truth(here[1].client, conv)
        check_acked_stored([stream], {conv: rows})
        await wait_live_complete(here + there, conv, max(rows))
        stop_following.set()
        acted = await asyncio.gather(*followers)
        for m, n in zip(there, acted, strict=True):
            pushes: list[dict[str, Any]] = [p for p in m.conv_pushes(conv) if "last_seq" in p]
            assert n >= 1 and pushes, f"{m.username} got no conv push for a gap of over a page"
            check_holds_exactly(m, conv, rows)
        for m in here:  # the sender's node delivered its own messages all along
            check_live_exactly_once(m, conv, rows)
    finally:
        stop_following.set()
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        await asyncio.gather(*(m.close() for m in here + there))
