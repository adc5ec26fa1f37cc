"""Rate-limit budgets in Redis, shared by every node so that a node count never
multiplies a budget. While Redis is unreachable each node falls back to its own memory
budgets: sends keep flowing through an outage.

Token buckets (the send rate) are taken on the node and settled with Redis behind: a
key's first take (or its first after a quiet spell) asks Redis and waits, and while the
key stays busy its takes come from a copy on the node, sent to Redis in one pipeline
every SYNC_INTERVAL_S; Redis's answer, which counts every node's takes, corrects the copy.
So a member who sends fast costs no Redis round trip per message, and one budget still
holds across nodes: a member busy on k nodes at once can overdraw it by what those
nodes take within one interval, then waits it back."""

from __future__ import annotations

import asyncio
import logging
import math
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
# Seconds between a node's settlements of its local takes with Redis.
SYNC_INTERVAL_S = 0.05
# Seconds a key's local copy is trusted without a take; the next take then asks Redis.
LOCAL_TRUST_S = 1.0
# Local copies kept before the untrusted ones are dropped.
LOCAL_PRUNE_AT = 100_000

# A token bucket in one round trip: refill by elapsed time, then take n tokens: only if
# there are n (ARGV[5] = 0: a take that waits for its answer), or whatever the balance
# (ARGV[5] = 1: takes a node granted already, settled). Returns {ms to wait or 0, the
# balance after, which may be below zero}.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens = tonumber(b[1])
local at = tonumber(b[2])
if tokens == nil then tokens = burst; at = now end
tokens = math.min(burst, tokens + math.max(0, now - at) / 1000 * rate)
local wait = 0
if ARGV[5] == '1' or tokens >= n then
  tokens = tokens - n
else
  wait = math.ceil((n - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 't', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {wait, tostring(tokens)}
"""


class _Copy:
    """A key's bucket as this node knows it: Redis's last answer, less what was taken
    here since (pending, not yet settled)."""

    __slots__ = ("at", "burst", "pending", "rate", "tokens", "trusted_until")

    def __init__(self, tokens: float, at: float, rate: float, burst: int) -> None:
        self.tokens = tokens
        self.at = at
        self.rate = rate
        self.burst = burst
        self.pending = 0
        self.trusted_until = at + LOCAL_TRUST_S

    def refill(self, now: float) -> None:
        self.tokens = min(float(self.burst), self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now


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
        self._copies: dict[str, _Copy] = {}
        self._sync_timer: asyncio.TimerHandle | None = None
        self._syncing: asyncio.Task[None] | None = None

    def _up(self) -> bool:
        return time.monotonic() >= self._down_until

    def _down(self, exc: Exception) -> None:
        if self._up():
            log.info("rate limits fall back to memory for %ss: %r", RETRY_REDIS_AFTER_S, exc)
        self._down_until = time.monotonic() + RETRY_REDIS_AFTER_S

    async def take(self, key: str, *, rate: float, burst: int) -> int:
        if not self._up():
            return await self._fallback.take(key, rate=rate, burst=burst)
        now = time.time()
        copy = self._copies.get(key)
        if copy is not None and now < copy.trusted_until:
            copy.refill(now)
            if copy.tokens >= 1.0:
                copy.tokens -= 1.0
                copy.pending += 1
                copy.trusted_until = now + LOCAL_TRUST_S
                self._schedule_sync()
                return 0
            return max(1, math.ceil((1.0 - copy.tokens) / rate * 1000))
        try:
            reply = await self._take(keys=[PREFIX + key], args=[rate, burst, int(now * 1000), 1, 0])
        except Exception as exc:
            self._down(exc)
            return await self._fallback.take(key, rate=rate, burst=burst)
        wait, balance = int(reply[0]), float(reply[1])
        if len(self._copies) >= LOCAL_PRUNE_AT:
            self._copies = {k: c for k, c in self._copies.items() if now < c.trusted_until}
        self._copies[key] = _Copy(balance, now, rate, burst)
        return wait

    def _schedule_sync(self) -> None:
        if self._sync_timer is None:
            loop = asyncio.get_running_loop()
            self._sync_timer = loop.call_later(SYNC_INTERVAL_S, self._start_sync)

    def _start_sync(self) -> None:
        self._sync_timer = None
        if self._syncing is None or self._syncing.done():
            self._syncing = asyncio.get_running_loop().create_task(self.sync())
        else:  # one settlement at a time: the takes meanwhile go in the next
            self._schedule_sync()

    async def sync(self, *, refresh: bool = False) -> None:
        """Settles this node's local takes with Redis now, in one pipeline, and takes its
        answers as the new copies; refresh: every copy, also those with nothing pending."""
        settling = [(k, c) for k, c in self._copies.items() if c.pending or refresh]
        if not settling:
            return
        now = time.time()
        pipe = self._redis.pipeline(transaction=False)
        for key, copy in settling:
            args = [copy.rate, copy.burst, int(now * 1000), copy.pending, 1]
            # EVAL, not the script's EVALSHA: a pipeline cannot load a script that a
            # restarted Redis lost, and the text is cached by Redis anyway.
            pipe.eval(_TAKE, 1, PREFIX + key, *args)
            copy.pending = 0
        try:
            replies = await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT_S)
        except Exception as exc:
            # The takes stay granted; Redis never hears of them (as in an outage).
            self._down(exc)
            return
        for (_key, copy), reply in zip(settling, replies, strict=True):
            # Takes granted here while the pipeline was out are not in Redis's balance.
            balance = float(reply[1]) - copy.pending
            copy.tokens = min(copy.tokens, balance)

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
