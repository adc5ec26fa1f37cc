"""A member as moderators see them: status, where they registered and logged in from,
reports about and by them, earlier bans, and the accounts linked to them."""

from __future__ import annotations

from typing import Any, Final

from moderation import audit as actions
from moderation import views
from moderation.audit import AuditLog
from moderation.errors import not_found
from moderation.linking import Linker
from moderation.reports import Reports
from persistence.records import Sighting, User
from persistence.sightings import SightingStore
from persistence.users import UserStore

# Logins shown, newest first.
MAX_LOGINS: Final = 200


def _sighting(s: Sighting) -> dict[str, Any]:
    return {"ts": s.ts, "address": s.address, "device": s.device, "user_agent": s.user_agent}


class Profiles:
    def __init__(
        self,
        *,
        users: UserStore,
        sightings: SightingStore,
        reports: Reports,
        linker: Linker,
        audit: AuditLog,
    ) -> None:
        self._users = users
        self._sightings = sightings
        self._reports = reports
        self._linker = linker
        self._audit = audit

    async def read(self, viewer: User, user_id: int) -> dict[str, Any]:
        """`{user, registrations, logins, reports, linked, bans}`; the read is audited."""
        user = await self._users.by_id(user_id)
        if user is None:
            raise not_found("no such user")
        await self._audit.record(viewer, actions.READ_USER, target=user.id)
        seen = await self._sightings.for_user(user.id)
        logins = [s for s in reversed(seen) if s.kind == "login"][:MAX_LOGINS]
        return {
            "user": views.user_object(user),
            "registrations": [_sighting(s) for s in seen if s.kind == "registration"],
            "logins": [_sighting(s) for s in logins],
            "reports": await self._reports.about_user(user.id),
            "bans": await self._audit.count_about(user.id, actions.BAN),
            "linked": [link.as_object() for link in await self._linker.linked(user.id)],
        }
