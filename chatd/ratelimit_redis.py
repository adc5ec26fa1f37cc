"""Rate-limit budgets in Redis, shared by every node so that a node count never
multiplies a budget. While Redis is unreachable each node falls back to its own memory
budgets: sends keep flowing through an outage."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from chatd.ratelimit import MemoryRateLimiter

log = logging.getLogger("chatd.ratelimit")

# Seconds to wait for Redis before a limit falls back to this node's memory.
REDIS_TIMEOUT_S = 0.5
# Seconds the limiter keeps to memory after Redis failed, before it asks Redis again: a
# Redis that does not answer must not cost every send REDIS_TIMEOUT_S.
RETRY_REDIS_AFTER_S = 1.0
# Key prefix of every budget.
PREFIX = "chatd:rl:"

# A token bucket in one round trip: refill by elapsed time, take one if there is one.
# Returns 0 when taken, else the ms until a token is free.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens = tonumber(b[1])
local at = tonumber(b[2])
if tokens == nil then tokens = burst; at = now end
tokens = math.min(burst, tokens + (now - at) / 1000 * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 't', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait
"""


class RedisRateLimiter:
    def __init__(self, url: str) -> None:
        self._fallback = MemoryRateLimiter(clock=time.time)
        # A failed call falls back to memory at once; redis-py's own retries (with
        # backoff) would hold every send up for the length of the outage.
        client: Any
        if url.startswith("redis+cluster://"):
            client = RedisCluster.from_url(
                "redis://" + url[len("redis+cluster://") :],
                socket_connect_timeout=REDIS_TIMEOUT_S,
                socket_timeout=REDIS_TIMEOUT_S,
                retry=Retry(NoBackoff(), 0),
            )
        else:
            client = aioredis.Redis.from_url(
                url,
                socket_connect_timeout=REDIS_TIMEOUT_S,
                socket_timeout=REDIS_TIMEOUT_S,
                retry=Retry(NoBackoff(), 0),
            )
        self._redis = client
        self._take = client.register_script(_TAKE)
        self._down_until = 0.0

    def _up(self) -> bool:
        return time.monotonic() >= self._down_until

    def _down(self, exc: Exception) -> None:
        if self._up():
            log.info("rate limits fall back to memory for %ss: %r", RETRY_REDIS_AFTER_S, exc)
        self._down_until = time.monotonic() + RETRY_REDIS_AFTER_S

    async def take(self, key: str, *, rate: float, burst: int) -> int:
        if not self._up():
            return await self._fallback.take(key, rate=rate, burst=burst)
        try:
            now = int(time.time() * 1000)
            return int(await self._take(keys=[PREFIX + key], args=[rate, burst, now]))
        except Exception as exc:
            self._down(exc)
            return await self._fallback.take(key, rate=rate, burst=burst)

    def _wkey(self, key: str, window_s: int) -> str:
        return f"{PREFIX}{key}:{int(time.time() // window_s)}"

    async def count(self, key: str, *, window_s: int) -> int:
        if not self._up():
            return await self._fallback.count(key, window_s=window_s)
        try:
            value = await self._redis.get(self._wkey(key, window_s))
            return int(value or 0)
        except Exception as exc:
            self._down(exc)
            return await self._fallback.count(key, window_s=window_s)

    async def add(self, key: str, *, window_s: int) -> int:
        if not self._up():
            return await self._fallback.add(key, window_s=window_s)
        wkey = self._wkey(key, window_s)
        try:
            # One round trip, and no window key left without its expiry by a crash.
            pipe = self._redis.pipeline(transaction=False)
            pipe.incr(wkey)
            pipe.expire(wkey, window_s + 1)
            n, _ = await pipe.execute()
            return int(n)
        except Exception as exc:
            self._down(exc)
            return await self._fallback.add(key, window_s=window_s)

    async def retry_after(self, key: str, *, window_s: int) -> int:
        return await self._fallback.retry_after(key, window_s=window_s)
