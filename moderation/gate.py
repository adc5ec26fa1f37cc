"""The privacy gate: a moderator reads a DM, or removes a message of one, only through
a report that covers it and is not dismissed, and only the messages sent up to
`gate_days` after the latest such report. Rooms are open to every moderator.

Every read through the gate and every refused attempt goes to the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from moderation import audit as actions
from moderation import views
from moderation.audit import AuditLog
from moderation.errors import Denied, not_found
from persistence.conversations import ConversationStore
from persistence.messages import MessageStore
from persistence.records import Conversation, User
from persistence.reports import ReportStore

# Milliseconds in a day (moderation.gate_days counts days).
DAY_MS: Final = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Opening:
    """Why and how far the gate is open for one conversation."""

    # Messages sent after this (ms) stay closed; None: no limit (a room).
    until: int | None
    # The reports that open it (none for a room).
    reports: tuple[int, ...]

    def admits(self, ts: int) -> bool:
        return self.until is None or ts <= self.until

    @property
    def report(self) -> int | None:
        """The latest report that opens it, as the audit log names it."""
        return self.reports[-1] if self.reports else None


ROOM: Final = Opening(None, ())


def no_report() -> Denied:
    return Denied("no_report", "no report covers this conversation")


class PrivacyGate:
    def __init__(
        self,
        *,
        reports: ReportStore,
        conversations: ConversationStore,
        messages: MessageStore,
        audit: AuditLog,
        gate_days: int,
    ) -> None:
        self._reports = reports
        self._conversations = conversations
        self._messages = messages
        self._audit = audit
        self._window_ms = gate_days * DAY_MS

    async def opening(self, conv: Conversation) -> Opening | None:
        """How far the gate opens conv; None when it stays shut."""
        if conv.kind != "dm":
            return ROOM
        if len(conv.members) != 2:
            return None
        a, b = conv.members[0].id, conv.members[1].id
        covering = await self._reports.covering_dm(conv.id, a, b)
        if not covering:
            return None
        latest = max(r.created for r in covering)
        ordered = sorted(covering, key=lambda r: (r.created, r.id))
        return Opening(latest + self._window_ms, tuple(r.id for r in ordered))

    async def do_read(
        self, actor: User, conv_id: int, *, after: int, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """A page of the conversation for a moderator, as far as the gate opens; audited."""
        detail = {"after": after, "limit": limit}
        conv = await self._conversations.get(conv_id)
        if conv is None:
            await self._audit.refused(
                actor, actions.READ_CONV, "no such conversation", conv=conv_id, detail=detail
            )
            raise not_found("no such conversation")
        opening = await self.opening(conv)
        if opening is None:
            await self._audit.refused(
                actor, actions.READ_CONV, "no report covers this DM", conv=conv_id, detail=detail
            )
            raise no_report()
        rows, more = await self._messages.history(conv_id, after, limit)
        admitted = [m for m in rows if opening.admits(m.ts)]
        if len(admitted) < len(rows):
            more = False  # what follows was sent after the window
            if not admitted:
                await self._audit.refused(
                    actor,
                    actions.READ_CONV,
                    "messages sent after the gate window",
                    conv=conv_id,
                    report=opening.report,
                    detail={**detail, "until": opening.until},
                )
                raise Denied("no_report", "these messages were sent after the report's window")
        await self._audit.record(
            actor,
            actions.READ_CONV,
            conv=conv_id,
            report=opening.report,
            detail={**detail, "kind": conv.kind, "count": len(admitted), "until": opening.until},
        )
        return [views.message_object(m, text=True) for m in admitted], more

    async def check_message(self, actor: User, conv: Conversation, ts: int, msg: int) -> Opening:
        """The opening that lets actor act on a message sent at ts; Denied (audited) else."""
        opening = await self.opening(conv)
        if opening is None or not opening.admits(ts):
            why = "no report covers this DM" if opening is None else "sent after the gate window"
            await self._audit.refused(
                actor,
                actions.REMOVE,
                why,
                conv=conv.id,
                msg=msg,
                report=None if opening is None else opening.report,
            )
            raise no_report()
        return opening
