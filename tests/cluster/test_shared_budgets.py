"""Rate-limit budgets in Redis, as two nodes see them (two limiters in this process):
one budget for all nodes, and a Redis that stops answering costs a send no more than
one timeout before the limiter keeps to memory for a while."""

from __future__ import annotations

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
    takes += [await node2.take("send:7", rate=RATE, burst=BURST) for _ in range(2)]
    assert takes == [0] * BURST
    assert await node1.take("send:7", rate=RATE, burst=BURST) > 0
    assert await node2.take("send:7", rate=RATE, burst=BURST) > 0
    assert await node1.add("loginfail:a:x", window_s=60) == 1
    assert await node2.add("loginfail:a:x", window_s=60) == 2
    assert await node1.count("loginfail:a:x", window_s=60) == 2
    ttl = own_redis.command("TTL", f"chatd:rl:loginfail:a:x:{int(time.time() // 60)}")
    assert 0 < int(ttl) <= 61, "a window's key must expire"


async def test_a_frozen_redis_costs_one_timeout_then_memory(own_redis: PrivateRedis) -> None:
    limiter = RedisRateLimiter(own_redis.url)
    assert await limiter.take("send:8", rate=100, burst=100) == 0
    os.kill(own_redis.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert await limiter.take("send:8", rate=100, burst=100) == 0  # from memory
        first = time.monotonic() - started
        started = time.monotonic()
        for _ in range(20):
            assert await limiter.take("send:8", rate=100, burst=100) == 0
            await limiter.count("loginfail:a:y", window_s=60)
        rest = time.monotonic() - started
    finally:
        os.kill(own_redis.pid, signal.SIGCONT)
    assert first < ratelimit_redis.REDIS_TIMEOUT_S * 3, f"first call while frozen: {first:.2f}s"
    assert rest < ratelimit_redis.REDIS_TIMEOUT_S, f"40 calls while frozen took {rest:.2f}s"
