"""Filing a report: rate-limited per account, targets the reporter cannot see refused as
not found (nothing is opened), the snapshot frozen, the priority given, and the
moderators told at once.

A report names a message, a conversation or a user. Its target is the account it is
about: the named user, else the message's sender, else a DM's other member; a room
reported as a whole has none. Reports on the same target share a case.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Final

from moderation import audit as actions
from moderation import views
from moderation.audit import AuditLog
from moderation.clock import Clock, now_ms
from moderation.errors import Denied, invalid, not_found
from moderation.linking import Linker
from moderation.notify import RateBudget
from moderation.priority import Facts, prioritise
from moderation.report_objects import ReportObjects
from persistence.conversations import ConversationStore
from persistence.messages import MessageStore
from persistence.records import Conversation, User
from persistence.reports import Around, Latest, NewReport, ReportStore, SnapshotSpec
from persistence.users import UserStore
from protocol.errors import ProtocolError
from protocol.text import age_on, check_username

# Seconds in the reporting window (limits.reports_per_hour).
REPORT_WINDOW_S: Final = 3600
# Messages frozen around a reported message: before it, and after it.
SNAPSHOT_BEFORE: Final = 20
SNAPSHOT_AFTER: Final = 5
# Messages frozen for a report naming a conversation, or only a user.
SNAPSHOT_LATEST: Final = 50


@dataclass(frozen=True, slots=True)
class _Target:
    user: User | None
    conv: Conversation | None
    msg: int | None
    snapshot: SnapshotSpec

    @property
    def case_key(self) -> str:
        if self.user is not None:
            return f"user:{self.user.id}"
        assert self.conv is not None
        return f"conv:{self.conv.id}"


class ReportFiling:
    def __init__(
        self,
        *,
        store: ReportStore,
        users: UserStore,
        conversations: ConversationStore,
        messages: MessageStore,
        linker: Linker,
        audit: AuditLog,
        objects: ReportObjects,
        budget: RateBudget,
        reports_per_hour: int,
        clock: Clock = now_ms,
    ) -> None:
        self._store = store
        self._users = users
        self._conversations = conversations
        self._messages = messages
        self._linker = linker
        self._audit = audit
        self._objects = objects
        self._budget = budget
        self._per_hour = reports_per_hour
        self._clock = clock

    async def check_budget(self, reporter: User) -> None:
        key = f"report:{reporter.id}"
        if await self._budget.count(key, window_s=REPORT_WINDOW_S) >= self._per_hour:
            retry = await self._budget.retry_after(key, window_s=REPORT_WINDOW_S)
            raise Denied("rate_limited", "too many reports", retry_after_ms=retry)

    async def _user(self, ref: int | str) -> User | None:
        if isinstance(ref, int):
            user = await self._users.by_id(ref)
        else:
            try:
                _, key = check_username(ref, "user")
            except ProtocolError:
                return None
            user = await self._users.by_username_key(key)
        return None if user is None or user.status == "deleted" else user

    async def _member_conv(self, reporter: User, conv_id: int) -> Conversation:
        conv = await self._conversations.get(conv_id)
        if conv is None or all(m.id != reporter.id for m in conv.members):
            raise not_found("no such conversation")
        return conv

    async def check_target(
        self, reporter: User, *, msg: int | None, conv: int | None, user: int | str | None
    ) -> _Target:
        """What the report is about; not_found for anything the reporter cannot see."""
        named = None
        if user is not None:
            named = await self._user(user)
            if named is None:
                raise not_found("no such user")
        if msg is not None:
            message = await self._messages.by_id(msg)
            if message is None:
                raise not_found("no such message")
            where = await self._member_conv(reporter, message.conv)
            if conv is not None and conv != where.id:
                raise invalid("conv", "is not the conversation of msg")
            target = named or await self._users.by_id(message.sender_id)
            spec: SnapshotSpec = Around(where.id, message.seq, SNAPSHOT_BEFORE, SNAPSHOT_AFTER)
            found = _Target(target, where, message.id, spec)
        elif conv is not None:
            where = await self._member_conv(reporter, conv)
            target = named
            if target is None and where.kind == "dm":
                others = [m.id for m in where.members if m.id != reporter.id]
                target = await self._users.by_id(others[0]) if others else None
            found = _Target(target, where, None, Latest(where.id, SNAPSHOT_LATEST))
        else:
            assert named is not None  # the frame names at least one of msg, conv, user
            dm = await self._conversations.dm_between(reporter.id, named.id)
            spec = None if dm is None else Latest(dm, SNAPSHOT_LATEST, sender=named.id)
            found = _Target(named, None, None, spec)
        if found.user is not None and found.user.id == reporter.id:
            raise invalid("user", "names yourself")
        return found

    async def _facts(self, reporter: User, category: str, target: _Target, now: int) -> Facts:
        day = views.today()
        reporters = await self._store.reporters_of(target.case_key) | {reporter.id}
        acted, dismissed = await self._store.track_record(reporter.id)
        facts = Facts(
            category=category,
            reporter_age=age_on(reporter.birthdate, day),
            distinct_reporters=len(reporters),
            reporter_actioned=acted,
            reporter_dismissed=dismissed,
            reporter_org=reporter.org,
        )
        user = target.user
        if user is None:
            return facts
        linked = await self._linker.linked(user.id)
        return dataclasses.replace(
            facts,
            target_age=age_on(user.birthdate, day),
            target_account_age_ms=max(0, now - user.created),
            target_actioned_reports=await self._store.actioned_about(user.id),
            target_bans=await self._audit.count_about(user.id, actions.BAN),
            target_linked_banned=sum(1 for link in linked if link.user.status == "banned"),
        )

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
        """Files a report; `{id, status}`. Moderators hear of it at once."""
        await self.check_budget(reporter)
        target = await self.check_target(reporter, msg=msg, conv=conv, user=user)
        now = self._clock()
        priority = prioritise(await self._facts(reporter, category, target, now))
        report = await self._store.open(
            NewReport(
                case_key=target.case_key,
                case_user_id=None if target.user is None else target.user.id,
                case_conv_id=None
                if target.user is not None or target.conv is None
                else target.conv.id,
                reporter_id=reporter.id,
                category=category,
                target_user_id=None if target.user is None else target.user.id,
                conv_id=None if target.conv is None else target.conv.id,
                message_id=target.msg,
                note=note,
                created=now,
                priority=priority.score,
                reasons=priority.reasons,
            ),
            target.snapshot,
        )
        await self._budget.add(f"report:{reporter.id}", window_s=REPORT_WINDOW_S)
        users = {reporter.id: reporter}
        if target.user is not None:
            users[target.user.id] = target.user
        await self._objects.announce("report.created", report, users)
        return {"id": report.id, "status": report.status}
