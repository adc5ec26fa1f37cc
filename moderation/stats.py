"""Registrations per day by stated age: how moderators see surges (hundreds of new
15-year-olds in a day) as they happen."""

from __future__ import annotations

import datetime
from collections import Counter
from typing import Any, Final

from moderation.clock import Clock, now_ms
from moderation.errors import invalid
from persistence.signals import SignalStore
from protocol.text import age_on

# Days shown by default, and at most.
DEFAULT_DAYS: Final = 30
MAX_DAYS: Final = 366


def _day_of(ms: int) -> datetime.date:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).date()


def _start_ms(day: datetime.date) -> int:
    start = datetime.datetime.combine(day, datetime.time(), datetime.UTC)
    return int(start.timestamp() * 1000)


class Stats:
    def __init__(self, *, signals: SignalStore, clock: Clock = now_ms) -> None:
        self._signals = signals
        self._clock = clock

    async def registrations(self, days: int = DEFAULT_DAYS) -> list[dict[str, Any]]:
        """One entry per UTC day, oldest first, today last: `{date, total, by_age}`, the
        age being the one stated for that day."""
        if not 1 <= days <= MAX_DAYS:
            raise invalid("days", f"must be from 1 to {MAX_DAYS}")
        today = _day_of(self._clock())
        first = today - datetime.timedelta(days=days - 1)
        counts: dict[datetime.date, Counter[int]] = {}
        for created, birthdate in await self._signals.registrations_since(_start_ms(first)):
            day = _day_of(created)
            counts.setdefault(day, Counter())[age_on(birthdate, day)] += 1
        out = []
        for n in range(days):
            day = first + datetime.timedelta(days=n)
            ages = counts.get(day, Counter())
            out.append(
                {
                    "date": day.isoformat(),
                    "total": sum(ages.values()),
                    "by_age": {str(age): ages[age] for age in sorted(ages)},
                }
            )
        return out
