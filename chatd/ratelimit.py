"""Rate-limit budgets: token buckets for sends, fixed windows for counted events.

The interface is shared by the in-memory limiter (one node) and the Redis one, which
every node shares so that a node count never multiplies a budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol


class RateLimiter(Protocol):
    async def take(self, key: str, *, rate: float, burst: int) -> int:
        """Takes one token from a bucket; 0 when allowed, else ms until one is free."""

    async def count(self, key: str, *, window_s: int) -> int:
        """The number of events counted for key in its current window."""

    async def add(self, key: str, *, window_s: int) -> int:
        """Counts one event; returns the new count in the window."""

    async def retry_after(self, key: str, *, window_s: int) -> int:
        """Ms until key's current window ends."""


class MemoryRateLimiter:
    """For a single node: plain dicts, pruned as they grow."""

    # Entries kept before stale ones are pruned.
    PRUNE_AT = 100_000

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.monotonic
        self._buckets: dict[str, tuple[float, float]] = {}
        self._windows: dict[str, tuple[int, int]] = {}

    async def take(self, key: str, *, rate: float, burst: int) -> int:
        now = self._clock()
        tokens, at = self._buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - at) * rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self.PRUNE_AT:
                self._prune_buckets(now, burst, rate)
            return 0
        self._buckets[key] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / rate * 1000))

    def _prune_buckets(self, now: float, burst: int, rate: float) -> None:
        full_after = burst / rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}

    def _window(self, window_s: int) -> int:
        return int(self._clock() // window_s)

    async def count(self, key: str, *, window_s: int) -> int:
        win, n = self._windows.get(key, (-1, 0))
        return n if win == self._window(window_s) else 0

    async def add(self, key: str, *, window_s: int) -> int:
        current = self._window(window_s)
        win, n = self._windows.get(key, (current, 0))
        n = n + 1 if win == current else 1
        self._windows[key] = (current, n)
        if len(self._windows) > self.PRUNE_AT:
            self._windows = {k: v for k, v in self._windows.items() if v[0] == current}
        return n

    async def retry_after(self, key: str, *, window_s: int) -> int:
        now = self._clock()
        return max(1, math.ceil(((now // window_s + 1) * window_s - now) * 1000))
