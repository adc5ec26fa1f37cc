"""What chatd hands moderation: a Notifier on top of the hub, and the translation of
moderation's refusals into chatd's own, for the session and the HTTP routes alike."""

from __future__ import annotations

from typing import Any

from chatd import events
from chatd.broker import MOD_CHANNEL, conv_channel, user_channel
from chatd.errors import Refused
from chatd.hub import Hub
from moderation.errors import Denied
from moderation.service import Moderation
from persistence.records import User


class HubNotifier:
    """moderation.notify.Notifier over the hub: every publication reaches every node."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    async def mod_event(self, event: dict[str, Any]) -> None:
        await self._hub.publish(MOD_CHANNEL, events.mod_event(event))

    async def close_user(self, user_id: int, code: int, reason: str) -> int:
        return await self._hub.close_user(user_id, code, reason)

    async def notice(self, user_id: int, text: str, kind: str) -> None:
        await self._hub.publish(user_channel(user_id), events.notice_event(text=text, kind=kind))

    async def removed(self, conv: int, id: int, seq: int) -> None:
        await self._hub.publish(conv_channel(conv), events.removal_event(conv=conv, id=id, seq=seq))


def refused(exc: Denied) -> Refused:
    return Refused(exc.code, exc.message, field=exc.field, retry_after_ms=exc.retry_after_ms)


class ReportDesk:
    """`node.reports`, as the session's on_report calls it."""

    def __init__(self, moderation: Moderation) -> None:
        self._moderation = moderation

    async def do_report(
        self,
        reporter: User,
        /,
        *,
        category: str,
        msg: int | None = None,
        conv: int | None = None,
        user: int | str | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        try:
            return await self._moderation.filing.do_report(
                reporter, category=category, msg=msg, conv=conv, user=user, note=note
            )
        except Denied as exc:
            raise refused(exc) from None
