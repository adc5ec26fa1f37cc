"""Rate-limit budgets in Redis, as two nodes see them (two limiters in this process):
one budget for all nodes, local takes settled with Redis within an interval, and a Redis
that stops answering costs no more than one timeout before the limiter keeps to memory
for a while."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from support.redis import PrivateRedis

from chatd import ratelimit_redis
from chatd.ratelimit_redis import RedisRateLimiter

pytestmark = pytest.mark.slow

# Tokens in the test bucket, and its refill rate per second (slow: no refill mid-test).
BURST = 5
RATE = 0.01


async def test_two_nodes_draw_on_one_bucket_and_one_window(own_redis: PrivateRedis) -> None:
    node1, node2 = RedisRateLimiter(own_redis.url), RedisRateLimiter(own_redis.url)
    takes = [await node1.take("send:7", rate=RATE, burst=BURST) for _ in range(3)]
    await node1.sync()
    takes += [await node2.take("send:7", rate=RATE, burst=BURST) for _ in range(2)]
    assert takes == [0] * BURST
    await node2.sync()
    await node1.sync(refresh=True)
    # Both nodes' takes are in the one bucket: neither node has any left.
    assert await node1.take("send:7", rate=RATE, burst=BURST) > 0
    assert await node2.take("send:7", rate=RATE, burst=BURST) > 0
    assert await node1.add("loginfail:a:x", window_s=60) == 1
    assert await node2.add("loginfail:a:x", window_s=60) == 2
    assert await node1.count("loginfail:a:x", window_s=60) == 2
    ttl = own_redis.command("TTL", f"chatd:rl:loginfail:a:x:{int(time.time() // 60)}")
    assert 0 < int(ttl) <= 61, "a window's key must expire"


async def test_local_takes_reach_redis_within_a_sync_interval(own_redis: PrivateRedis) -> None:
    node1, node2 = RedisRateLimiter(own_redis.url), RedisRateLimiter(own_redis.url)
    # The first take asks Redis; the rest come from the node's copy, settled behind.
    assert [await node1.take("send:9", rate=RATE, burst=BURST) for _ in range(BURST)] == [0] * 5
    assert await node1.take("send:9", rate=RATE, burst=BURST) > 0
    deadline = time.monotonic() + ratelimit_redis.SYNC_INTERVAL_S * 20
    while float(own_redis.command("HGET", "chatd:rl:send:9", "t") or BURST) >= 1:
        assert time.monotonic() < deadline, "the local takes never reached Redis"
        await asyncio.sleep(ratelimit_redis.SYNC_INTERVAL_S / 2)
    # A node that has not seen the key asks Redis, which counts the other node's takes.
    assert await node2.take("send:9", rate=RATE, burst=BURST) > 0


async def test_a_node_that_overdraws_learns_it_at_its_next_sync(own_redis: PrivateRedis) -> None:
    node1, node2 = RedisRateLimiter(own_redis.url), RedisRateLimiter(own_redis.url)
    assert await node1.take("send:10", rate=RATE, burst=BURST) == 0
    assert await node2.take("send:10", rate=RATE, burst=BURST) == 0
    # Each node's copy believes in 4 more; together they may overdraw within an interval.
    granted = [await node1.take("send:10", rate=RATE, burst=BURST) for _ in range(4)]
    granted += [await node2.take("send:10", rate=RATE, burst=BURST) for _ in range(4)]
    assert granted.count(0) == 7  # node2's copy was made after node1's first take
    await node1.sync()
    await node2.sync()
    await node1.sync(refresh=True)
    assert await node1.take("send:10", rate=RATE, burst=BURST) > 0
    assert await node2.take("send:10", rate=RATE, burst=BURST) > 0
    assert float(own_redis.command("HGET", "chatd:rl:send:10", "t")) < 0, "the debt is kept"


async def test_a_frozen_redis_costs_one_timeout_then_memory(own_redis: PrivateRedis) -> None:
    limiter = RedisRateLimiter(own_redis.url)
    assert await limiter.take("send:8", rate=100, burst=100) == 0
    os.kill(own_redis.pid, signal.SIGSTOP)
    try:
        # Takes come from the node's copy; the first call that waits on Redis (here the
        # count, or the copy's settlement behind) pays one timeout, then all is memory.
        started = time.monotonic()
        for _ in range(20):
            assert await limiter.take("send:8", rate=100, burst=100) == 0
            await limiter.count("loginfail:a:y", window_s=60)
        took = time.monotonic() - started
    finally:
        os.kill(own_redis.pid, signal.SIGCONT)
    assert took < ratelimit_redis.REDIS_TIMEOUT_S * 2, f"40 calls while frozen took {took:.2f}s"


async def test_local_takes_settle_on_a_redis_cluster(redis_cluster_url: str) -> None:
    node1, node2 = RedisRateLimiter(redis_cluster_url), RedisRateLimiter(redis_cluster_url)
    keys = [f"send:{n}" for n in range(100, 110)]  # over several slots, so several shards
    for key in keys:
        assert [await node1.take(key, rate=RATE, burst=BURST) for _ in range(BURST)] == [0] * 5
    await node1.sync()
    for key in keys:
        assert await node2.take(key, rate=RATE, burst=BURST) > 0, key
