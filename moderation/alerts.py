"""Alerts for the moderators. For now: a new account linked to a banned one (ban evasion).

Policy: the registration is allowed and the moderators are alerted at once; refusing it
(`registration_blocked`) would teach an evader which device or address gave them away.
"""

from __future__ import annotations

import json
from typing import Any, Final

from moderation import views
from moderation.clock import Clock, now_ms
from moderation.linking import Linker
from moderation.notify import Notifier
from persistence.alerts import AlertStore
from persistence.records import User

BAN_EVASION: Final = "ban_evasion"
# Alerts one listing returns by default.
DEFAULT_LIMIT: Final = 100


class Alerts:
    def __init__(
        self, *, store: AlertStore, linker: Linker, notifier: Notifier, clock: Clock = now_ms
    ) -> None:
        self._store = store
        self._linker = linker
        self._notifier = notifier
        self._clock = clock

    async def do_check_registration(self, user: User) -> dict[str, Any] | None:
        """After a registration: alerts when the new account links to banned ones."""
        banned = [
            link for link in await self._linker.linked(user.id) if link.user.status == "banned"
        ]
        if not banned:
            return None
        alert: dict[str, Any] = {
            "kind": BAN_EVASION,
            "user": views.ref(user),
            "linked": [
                {
                    "id": link.user.id,
                    "username": link.user.username,
                    "reasons": list(link.reasons),
                    "score": link.score,
                }
                for link in banned
            ],
        }
        stored = await self._store.append(
            ts=self._clock(), kind=BAN_EVASION, user_id=user.id, detail=json.dumps(alert)
        )
        alert = {"id": stored.id, **alert}
        await self._notifier.mod_event({"kind": "alert", "ts": stored.ts, "alert": alert})
        return alert

    async def recent(self, limit: int = DEFAULT_LIMIT) -> list[dict[str, Any]]:
        """Newest first, each as its mod.event carried it, with its time."""
        return [
            {"id": a.id, "ts": a.ts, **json.loads(a.detail)}
            for a in await self._store.recent(limit)
        ]
