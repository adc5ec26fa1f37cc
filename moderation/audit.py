"""The audit log as moderators use it: every read, action and refused attempt is
recorded; moderators see their own entries, admins everyone's."""

from __future__ import annotations

import json
from typing import Any, Final

from moderation import views
from moderation.clock import Clock, now_ms
from moderation.errors import forbidden
from persistence.audit import AuditStore
from persistence.records import User
from persistence.signals import SignalStore

# Actions as they are written; a refused attempt is its action with REFUSED appended.
READ_REPORT: Final = "report.read"
CLAIM: Final = "report.claim"
RESOLVE: Final = "report.resolve"
READ_CONV: Final = "conv.read"
READ_USER: Final = "user.read"
REMOVE: Final = "message.remove"
WARN: Final = "user.warn"
KICK: Final = "user.kick"
BAN: Final = "user.ban"
UNBAN: Final = "user.unban"
REFUSED: Final = ".refused"

# Entries one listing returns by default and at most.
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000


class AuditLog:
    def __init__(self, *, store: AuditStore, signals: SignalStore, clock: Clock = now_ms) -> None:
        self._store = store
        self._signals = signals
        self._clock = clock

    async def record(
        self,
        actor: User,
        action: str,
        *,
        target: int | None = None,
        conv: int | None = None,
        msg: int | None = None,
        report: int | None = None,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        return await self._store.append(
            ts=self._clock(),
            actor_id=actor.id,
            action=action,
            target_user_id=target,
            conv_id=conv,
            message_id=msg,
            report_id=report,
            reason=reason,
            detail=None if detail is None else json.dumps(detail, separators=(",", ":")),
        )

    async def refused(self, actor: User, action: str, why: str, **fields: Any) -> int:
        """Records a refused attempt; `why` says what refused it."""
        return await self.record(actor, action + REFUSED, reason=why, **fields)

    async def count_about(self, user_id: int, action: str) -> int:
        return await self._store.count_about(user_id, (action,))

    async def entries(
        self, viewer: User, *, actor: int | None, target: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Newest first. A moderator sees only their own entries."""
        if viewer.role != "admin":
            if actor is not None and actor != viewer.id:
                raise forbidden("moderators see only their own audit entries")
            actor = viewer.id
        rows = await self._store.entries(
            actor_id=actor, target_user_id=target, limit=min(limit, MAX_LIMIT)
        )
        ids = {e.actor_id for e in rows} | {e.target_user_id for e in rows if e.target_user_id}
        users = await self._signals.users(ids)
        return [views.audit_object(e, users) for e in rows]
