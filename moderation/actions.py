"""Moderator actions on accounts and messages: warn, kick, ban, unban, remove.

Each `do_*` checks who may act on whom, changes state, writes the audit entry, and only
then tells people (through the Notifier): publish after commit.
"""

from __future__ import annotations

from typing import Any, Final

from moderation import audit as actions
from moderation import views
from moderation.audit import AuditLog
from moderation.clock import Clock, now_ms
from moderation.errors import Denied, invalid, not_found
from moderation.gate import PrivacyGate
from moderation.notify import Notifier
from moderation.roles import check_may_act
from persistence.conversations import ConversationStore
from persistence.messages import MessageStore
from persistence.records import User
from persistence.sessions import SessionStore
from persistence.users import UserStore
from protocol.codes import CloseCode

# Milliseconds in a day (a ban's `days`).
DAY_MS: Final = 24 * 3600 * 1000
# The most days a timed ban may run (ten years); longer is a ban without days.
MAX_BAN_DAYS: Final = 3650
# `kind` of the notice a warned member gets.
WARNING: Final = "warning"
# What the member is told when the moderator gave no reason.
DEFAULT_KICK_REASON: Final = "removed by a moderator"
DEFAULT_BAN_REASON: Final = "banned by a moderator"


class Actions:
    def __init__(
        self,
        *,
        users: UserStore,
        sessions: SessionStore,
        conversations: ConversationStore,
        messages: MessageStore,
        gate: PrivacyGate,
        audit: AuditLog,
        notifier: Notifier,
        clock: Clock = now_ms,
    ) -> None:
        self._users = users
        self._sessions = sessions
        self._conversations = conversations
        self._messages = messages
        self._gate = gate
        self._audit = audit
        self._notifier = notifier
        self._clock = clock

    async def check_target(self, actor: User, user_id: int, action: str) -> User:
        """The account actor may act on; Denied (a refusal is audited) otherwise."""
        target = await self._users.by_id(user_id)
        if target is None:
            raise not_found("no such user")
        try:
            check_may_act(actor, target)
        except Denied as exc:
            await self._audit.refused(actor, action, exc.message, target=target.id)
            raise
        return target

    async def do_warn(
        self, actor: User, user_id: int, reason: str, *, report: int | None = None
    ) -> User:
        target = await self.check_target(actor, user_id, actions.WARN)
        await self._audit.record(
            actor, actions.WARN, target=target.id, report=report, reason=reason
        )
        await self._notifier.notice(target.id, reason, WARNING)
        return target

    async def do_kick(
        self, actor: User, user_id: int, reason: str | None, *, report: int | None = None
    ) -> int:
        """Closes every connection of the user (4003); the number closed. Tokens stay."""
        target = await self.check_target(actor, user_id, actions.KICK)
        told = reason or DEFAULT_KICK_REASON
        await self._audit.record(
            actor, actions.KICK, target=target.id, report=report, reason=reason
        )
        closed = await self._notifier.close_user(target.id, CloseCode.KICKED, told)
        await self._notifier.mod_event(
            {
                "kind": "user.kicked",
                "ts": self._clock(),
                "user": views.ref(target),
                "by": views.ref(actor),
                "reason": told,
                "sessions_closed": closed,
            }
        )
        return closed

    async def do_ban(
        self,
        actor: User,
        user_id: int,
        reason: str | None,
        *,
        days: int | None = None,
        report: int | None = None,
    ) -> User:
        """Bans the account (for `days`, or until unbanned), revokes every session token
        and closes its connections (4004)."""
        if days is not None and not 1 <= days <= MAX_BAN_DAYS:
            raise invalid("days", f"must be from 1 to {MAX_BAN_DAYS}")
        target = await self.check_target(actor, user_id, actions.BAN)
        now = self._clock()
        until = None if days is None else now + days * DAY_MS
        await self._users.set_status(target.id, "banned", until)
        revoked = await self._sessions.revoke_all(target.id, now)
        await self._audit.record(
            actor,
            actions.BAN,
            target=target.id,
            report=report,
            reason=reason,
            detail={"days": days, "until": until, "sessions_revoked": len(revoked)},
        )
        told = reason or DEFAULT_BAN_REASON
        await self._notifier.close_user(target.id, CloseCode.BANNED, told)
        banned = await self._users.by_id(target.id) or target
        await self._notifier.mod_event(
            {
                "kind": "user.banned",
                "ts": self._clock(),
                "user": views.ref(banned),
                "by": views.ref(actor),
                "reason": told,
                "until": until,
            }
        )
        return banned

    async def do_unban(self, actor: User, user_id: int, reason: str | None) -> User:
        target = await self.check_target(actor, user_id, actions.UNBAN)
        if target.status == "banned":
            await self._users.set_status(target.id, "active")
        await self._audit.record(actor, actions.UNBAN, target=target.id, reason=reason)
        return await self._users.by_id(target.id) or target

    async def do_remove(self, actor: User, message_id: int, reason: str | None) -> dict[str, Any]:
        """Removes a message from members' view (its text stays stored); a DM's message
        only through the gate. The message as members now see it."""
        message = await self._messages.by_id(message_id)
        conv = None if message is None else await self._conversations.get(message.conv)
        if message is None or conv is None:
            await self._audit.refused(actor, actions.REMOVE, "no such message", msg=message_id)
            raise not_found("no such message")
        opening = await self._gate.check_message(actor, conv, message.ts, message.id)
        await self.check_target(actor, message.sender_id, actions.REMOVE)
        newly = await self._messages.remove(message.id, actor.id, reason or "", self._clock())
        await self._audit.record(
            actor,
            actions.REMOVE,
            target=message.sender_id,
            conv=conv.id,
            msg=message.id,
            report=opening.report,
            reason=reason,
            detail={"already_removed": not newly},
        )
        if newly:
            await self._notifier.removed(conv.id, message.id, message.seq)
        after = await self._messages.by_id(message.id) or message
        return views.message_object(after, text=False)
