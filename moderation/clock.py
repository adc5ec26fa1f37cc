"""Wall-clock time in milliseconds since the Unix epoch, as the protocol counts it."""

from __future__ import annotations

import time
from collections.abc import Callable

# A source of the current time in ms; services take one so tests can fix the time.
Clock = Callable[[], int]


def now_ms() -> int:
    return int(time.time() * 1000)
