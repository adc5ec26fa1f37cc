"""Reports as moderators get them, with the accounts they name looked up in one query,
and their announcement as a mod.event."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moderation import views
from moderation.clock import Clock, now_ms
from moderation.notify import Notifier
from persistence.records import Report, User
from persistence.signals import SignalStore


class ReportObjects:
    def __init__(self, *, signals: SignalStore, notifier: Notifier, clock: Clock = now_ms) -> None:
        self._signals = signals
        self._notifier = notifier
        self._clock = clock

    async def objects(
        self, rows: list[Report], known: Mapping[int, User] | None = None
    ) -> list[dict[str, Any]]:
        users = dict(known or {})
        wanted: set[int] = set()
        for report in rows:
            wanted |= views.report_user_ids(report)
        if wanted - set(users):
            users.update(await self._signals.users(wanted - set(users)))
        day = views.today()
        return [views.report_object(report, users, on=day) for report in rows]

    async def announce(
        self, kind: str, report: Report, known: Mapping[int, User] | None = None
    ) -> None:
        """A `report.created` or `report.updated` mod.event."""
        (obj,) = await self.objects([report], known)
        await self._notifier.mod_event({"kind": kind, "ts": self._clock(), "report": obj})
