"""One contract for every broker: the memory broker, Redis pub/sub and Redis Cluster.

Each test runs in-process against every implementation it applies to. What a broker
promises (chatd/broker.py): a subscription is in place when `subscribe` returns, only
subscribed channels are delivered, publications on a channel arrive in publish order,
`unsubscribe` stops delivery, and after its server restarts a Redis broker reconnects
by itself, resubscribes everything and calls `on_broker_up(resubscribed=True)`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.crc import key_slot
from support.redis import PrivateRedis, PrivateRedisCluster
from support.wait import async_wait_until

from chatd.broker import Broker, BrokerUnavailable
from chatd.broker_memory import MemoryBroker
from chatd.broker_redis import RedisBroker

# Seconds a publication may take to arrive, or a broker to (re)connect.
DELIVERY_TIMEOUT_S = 10.0
# Seconds of a Redis outage in the restart tests.
OUTAGE_S = 1.0
# Publications in the ordering test.
ORDER_COUNT = 2000

# The Redis kinds need a redis-server (marked, so `-m "not redis"` leaves them out).
REDIS_KINDS = [
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("cluster", marks=pytest.mark.redis),
]
KINDS = ["memory", *REDIS_KINDS]

_names = itertools.count(1)


def channel(tag: str | None = None) -> str:
    """A fresh channel; channels with the same tag hash to one cluster slot (one link)."""
    n = next(_names)
    return f"test:{{{tag}}}:{n}" if tag else f"test:{os.getpid()}:{n}"


class Recorder:
    """A BrokerHandler that keeps what it is told."""

    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.ups: list[bool] = []
        self.downs = 0

    def on_publication(self, channel: str, payload: bytes) -> None:
        self.got.append((channel, payload))

    def on_broker_up(self, resubscribed: bool) -> None:
        self.ups.append(resubscribed)

    def on_broker_down(self) -> None:
        self.downs += 1

    def on(self, channel: str) -> list[bytes]:
        return [p for c, p in self.got if c == channel]


Make = Callable[[], Awaitable[tuple[Broker, Recorder]]]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _url_of(kind: str, request: pytest.FixtureRequest) -> str:
    if kind == "redis":
        return str(request.getfixturevalue("redis_url"))
    if kind == "cluster":
        return str(request.getfixturevalue("redis_cluster_url"))
    return "memory://"


async def _started(url: str) -> tuple[Broker, Recorder]:
    broker: Broker = MemoryBroker() if url == "memory://" else RedisBroker(url)
    rec = Recorder()
    await broker.start(rec)
    await async_wait_until(
        lambda: broker.connected and rec.ups, DELIVERY_TIMEOUT_S, message="broker never came up"
    )
    return broker, rec


@pytest.fixture
async def make(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """Starts brokers of this kind (all on one server), each with its own Recorder."""
    url = _url_of(kind, request)
    brokers: list[Broker] = []

    async def factory() -> tuple[Broker, Recorder]:
        broker, rec = await _started(url)
        brokers.append(broker)
        return broker, rec

    yield factory
    for broker in brokers:
        await broker.close()


@pytest.fixture(params=REDIS_KINDS)
async def make_redis(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """As `make`, for the Redis kinds only (tests that need two nodes on one server)."""
    url = _url_of(str(request.param), request)
    brokers: list[Broker] = []

    async def factory() -> tuple[Broker, Recorder]:
        broker, rec = await _started(url)
        brokers.append(broker)
        return broker, rec

    yield factory
    for broker in brokers:
        await broker.close()


async def received(rec: Recorder, ch: str, n: int) -> list[bytes]:
    await async_wait_until(
        lambda: len(rec.on(ch)) >= n,
        DELIVERY_TIMEOUT_S,
        message=lambda: f"{ch}: {len(rec.on(ch))} of {n} publications arrived",
    )
    return rec.on(ch)


# -- in every broker -------------------------------------------------------------------------


async def test_first_start_reports_up_without_resubscribe(make: Make) -> None:
    broker, rec = await make()
    assert broker.connected
    assert rec.ups == [False]
    assert rec.downs == 0


async def test_a_subscription_is_in_place_when_subscribe_returns(make: Make) -> None:
    broker, rec = await make()
    ch = channel()
    await broker.subscribe(ch)
    await broker.publish(ch, b"first")
    assert await received(rec, ch, 1) == [b"first"]


async def test_only_subscribed_channels_are_delivered(make: Make) -> None:
    broker, rec = await make()
    wanted, other = channel("a"), channel("a")  # one slot: one connection, one order
    await broker.subscribe(wanted)
    await broker.publish(other, b"not for us")
    await broker.publish(wanted, b"marker")
    await received(rec, wanted, 1)
    assert rec.on(other) == []
    assert rec.got == [(wanted, b"marker")]


async def test_payloads_arrive_unchanged(make: Make) -> None:
    broker, rec = await make()
    ch = channel()
    payloads = [b"", b"\x00\xff\xfe binary", "åäö ✓".encode(), bytes(range(256)) * 200]
    await broker.subscribe(ch)
    for p in payloads:
        await broker.publish(ch, p)
    assert await received(rec, ch, len(payloads)) == payloads


async def test_publish_order_is_kept(make: Make) -> None:
    broker, rec = await make()
    a, b = channel("o"), channel("o")
    await broker.subscribe(a)
    await broker.subscribe(b)
    want = [str(i).encode() for i in range(ORDER_COUNT)]
    # Publishes issued back to back, without waiting for each other, keep call order.
    await asyncio.gather(*(broker.publish(a if i % 3 else b, p) for i, p in enumerate(want)))
    got_a = await received(rec, a, len([p for i, p in enumerate(want) if i % 3]))
    got_b = await received(rec, b, len([p for i, p in enumerate(want) if not i % 3]))
    assert got_a == [p for i, p in enumerate(want) if i % 3]
    assert got_b == [p for i, p in enumerate(want) if not i % 3]
    # Same slot, same connection: the interleaving across the two channels is kept too.
    assert [p for _, p in rec.got] == want


async def test_unsubscribe_stops_delivery(make: Make) -> None:
    broker, rec = await make()
    ch, marker = channel("u"), channel("u")
    await broker.subscribe(ch)
    await broker.subscribe(marker)
    await broker.publish(ch, b"before")
    await received(rec, ch, 1)
    await broker.unsubscribe(ch)
    await broker.publish(ch, b"after")
    await broker.publish(marker, b"marker")
    await received(rec, marker, 1)
    assert rec.on(ch) == [b"before"]


async def test_subscribe_unsubscribe_subscribe_ends_subscribed(make: Make) -> None:
    """Calls take effect in call order, also when none waits for the one before."""
    broker, rec = await make()
    ch = channel()
    await broker.subscribe(ch)
    await broker.unsubscribe(ch)
    await broker.subscribe(ch)
    await broker.publish(ch, b"1")
    assert await received(rec, ch, 1) == [b"1"]
    for _ in range(3):
        first = asyncio.ensure_future(broker.unsubscribe(ch))
        second = asyncio.ensure_future(broker.subscribe(ch))
        await asyncio.gather(first, second)
    await broker.publish(ch, b"2")
    assert await received(rec, ch, 2) == [b"1", b"2"]


async def test_unsubscribe_of_an_unknown_channel_is_harmless(make: Make) -> None:
    broker, rec = await make()
    ch = channel()
    await broker.unsubscribe(channel())
    await broker.subscribe(ch)
    await broker.subscribe(ch)  # twice: still one delivery per publication
    await broker.publish(ch, b"x")
    await broker.publish(ch, b"y")
    assert await received(rec, ch, 2) == [b"x", b"y"]
    await broker.unsubscribe(ch)
    await broker.unsubscribe(ch)


async def test_subscriber_count(make: Make, kind: str) -> None:
    broker, _ = await make()
    count = broker.subscriber_count
    ch = channel()
    assert await count(ch) == 0
    await broker.subscribe(ch)
    assert await count(ch) == 1
    await broker.unsubscribe(ch)
    assert await async_wait_until(
        _is_zero(lambda: count(ch)), DELIVERY_TIMEOUT_S, message="still subscribed"
    )


def _is_zero(get: Callable[[], Awaitable[int]]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await get() == 0

    return check


# -- between nodes (Redis) -------------------------------------------------------------------


async def test_publications_reach_every_subscribed_node(make_redis: Make) -> None:
    (a, rec_a), (b, rec_b), (c, rec_c) = [await make_redis() for _ in range(3)]
    ch = channel()
    await a.subscribe(ch)
    await b.subscribe(ch)
    count = getattr(a, "subscriber_count")  # noqa: B009 - Redis brokers have it
    assert await count(ch) == 2
    for i in range(50):
        await c.publish(ch, str(i).encode())
    want = [str(i).encode() for i in range(50)]
    assert await received(rec_a, ch, 50) == want
    assert await received(rec_b, ch, 50) == want
    assert rec_c.on(ch) == []


async def test_many_channels_on_one_subscriber(make_redis: Make) -> None:
    """One node multiplexes all its channels (one connection per shard)."""
    (a, rec_a), (b, _) = await make_redis(), await make_redis()
    chans = [f"chatd:c:{9_000_000 + i}" for i in range(200)]  # spread over the slots
    await asyncio.gather(*(a.subscribe(ch) for ch in chans))
    await asyncio.gather(*(b.publish(ch, ch.encode()) for ch in chans))
    await async_wait_until(
        lambda: len(rec_a.got) >= len(chans),
        DELIVERY_TIMEOUT_S,
        message=lambda: f"{len(rec_a.got)} of {len(chans)} channels delivered",
    )
    assert sorted(p for _, p in rec_a.got) == sorted(ch.encode() for ch in chans)
    links = getattr(a, "_links")  # noqa: B009 - the point is how many connections there are
    assert len(links) == (1 if not getattr(a, "cluster") else 3)  # noqa: B009


# -- Redis restarts ----------------------------------------------------------------------------


@pytest.fixture
async def own_broker_pair(own_redis: PrivateRedis) -> AsyncIterator[tuple[Any, ...]]:
    """Two brokers on a Redis of this test's own, which the test restarts."""
    a, rec_a = await _started(own_redis.url)
    b, rec_b = await _started(own_redis.url)
    yield a, rec_a, b, rec_b
    await a.close()
    await b.close()


async def _outage(broker: Broker, rec: Recorder, stop: Callable[[], None]) -> None:
    downs = rec.downs
    stop()
    await async_wait_until(
        lambda: not broker.connected and rec.downs > downs,
        DELIVERY_TIMEOUT_S,
        message="the broker did not notice that Redis went away",
    )


@pytest.mark.slow
async def test_redis_restart_reconnects_and_resubscribes(
    own_redis: PrivateRedis, own_broker_pair: tuple[Any, ...]
) -> None:
    a, rec_a, b, rec_b = own_broker_pair
    kept, added, dropped = channel(), channel(), channel()
    await a.subscribe(kept)
    await a.subscribe(dropped)
    await b.publish(kept, b"before")
    await received(rec_a, kept, 1)

    await _outage(a, rec_a, own_redis.kill)
    with pytest.raises(BrokerUnavailable):
        await a.publish(kept, b"lost")  # the database holds the truth; Redis just says so
    await a.subscribe(added)  # queued while down
    await a.unsubscribe(dropped)  # likewise
    await asyncio.sleep(OUTAGE_S)  # the outage itself, not a wait for an outcome
    ups = len(rec_a.ups)
    own_redis.start()
    await async_wait_until(
        lambda: a.connected and b.connected and len(rec_a.ups) > ups,
        DELIVERY_TIMEOUT_S,
        message="the brokers did not reconnect",
    )
    assert rec_a.ups[-1] is True, "on_broker_up after an outage must say resubscribed=True"
    assert rec_b.ups[-1] is True
    await b.publish(dropped, b"dropped")
    await b.publish(kept, b"after")
    await b.publish(added, b"added")
    assert await received(rec_a, kept, 2) == [b"before", b"after"]
    assert await received(rec_a, added, 1) == [b"added"]
    assert rec_a.on(dropped) == []
    assert await a.subscriber_count(kept) == 1
    assert await a.subscriber_count(dropped) == 0


@pytest.mark.slow
async def test_subscribes_during_the_reconnect_all_take_hold(
    own_redis: PrivateRedis, own_broker_pair: tuple[Any, ...]
) -> None:
    """Channels asked for while the link reconnects (its old subscriptions being
    restored) must not fall between the restore and the link being up."""
    a, rec_a, b, _ = own_broker_pair
    for ch in [channel() for _ in range(50)]:
        await a.subscribe(ch)  # a few to restore, so that the restore takes a round trip
    await _outage(a, rec_a, own_redis.kill)
    own_redis.start()
    asked: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DELIVERY_TIMEOUT_S
    settled_at: float | None = None
    # One subscribe every half millisecond, from before the reconnect to well after it.
    while loop.time() < deadline:
        ch = channel()
        asked.append(ch)
        await a.subscribe(ch)
        if a.connected and settled_at is None:
            settled_at = loop.time()
        if settled_at is not None and loop.time() > settled_at + 0.2:
            break
        await asyncio.sleep(0.0005)
    assert a.connected
    for ch in asked:
        await b.publish(ch, ch.encode())
    await async_wait_until(
        lambda: {c for c, _ in rec_a.got} >= set(asked),
        DELIVERY_TIMEOUT_S,
        message=lambda: (
            f"{len(set(asked) - {c for c, _ in rec_a.got})} of {len(asked)} channels "
            "subscribed during the reconnect never delivered"
        ),
    )


@pytest.mark.slow
async def test_a_frozen_redis_is_noticed(
    own_redis: PrivateRedis, own_broker_pair: tuple[Any, ...]
) -> None:
    """A server that stops answering without closing the connection (a dead host, a
    partition) counts as down: pings that get no answer end the link."""
    a, rec_a, b, _ = own_broker_pair
    ch = channel()
    await a.subscribe(ch)
    os.kill(own_redis.pid, signal.SIGSTOP)
    try:
        await async_wait_until(
            lambda: not a.connected and rec_a.downs > 0,
            DELIVERY_TIMEOUT_S * 2,
            message="a Redis that stopped answering still counts as connected",
        )
    finally:
        os.kill(own_redis.pid, signal.SIGCONT)
    await async_wait_until(lambda: a.connected and rec_a.ups[-1] is True, DELIVERY_TIMEOUT_S * 2)
    await b.publish(ch, b"after")
    assert (await received(rec_a, ch, 1))[-1] == b"after"


@pytest.mark.slow
async def test_cluster_shard_restart_reconnects_that_shard(
    redis_cluster: PrivateRedisCluster, redis_cluster_url: str
) -> None:
    a, rec_a = await _started(redis_cluster_url)
    b, _ = await _started(redis_cluster_url)
    try:
        chans = [f"chatd:c:{8_000_000 + i}" for i in range(60)]
        for ch in chans:
            await a.subscribe(ch)
        # The shard that holds the first channel's slot goes away and comes back.
        owner = _slot_owner(redis_cluster, key_slot(chans[0].encode()))
        await _outage(a, rec_a, owner.kill)
        await asyncio.sleep(OUTAGE_S)
        ups = len(rec_a.ups)
        owner.start()
        redis_cluster.wait_healthy()
        await async_wait_until(lambda: a.connected and len(rec_a.ups) > ups, DELIVERY_TIMEOUT_S * 2)
        assert rec_a.ups[-1] is True
        await async_wait_until(lambda: b.connected, DELIVERY_TIMEOUT_S * 2)
        for ch in chans:
            await b.publish(ch, b"after")
        await async_wait_until(
            lambda: {c for c, _ in rec_a.got} >= set(chans),
            DELIVERY_TIMEOUT_S,
            message=lambda: f"{len(set(chans) - {c for c, _ in rec_a.got})} channels lost",
        )
    finally:
        await a.close()
        await b.close()


def _slot_owner(cluster: PrivateRedisCluster, slot: int) -> PrivateRedis:
    reply = cluster.nodes[0].command("CLUSTER SLOTS")
    for entry in reply:
        start, end, primary = int(entry[0]), int(entry[1]), entry[2]
        if start <= slot <= end:
            port = int(primary[1])
            return next(n for n in cluster.nodes if n.port == port)
    raise AssertionError(f"no node holds slot {slot}")
