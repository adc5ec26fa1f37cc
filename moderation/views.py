"""How moderation's records look to moderators: users, reports, snapshots, audit entries."""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from typing import Any

from persistence.records import AuditEntry, Message, Report, SnapshotMessage, User
from protocol.text import age_on


def today() -> datetime.date:
    return datetime.datetime.now(datetime.UTC).date()


def ref(user: User | None) -> dict[str, Any] | None:
    """`{id, username}`, as in `reporter`, `target` and `by`."""
    return None if user is None else {"id": user.id, "username": user.username}


def user_object(user: User, *, on: datetime.date | None = None) -> dict[str, Any]:
    """A user object with what moderators need beside it: status, org, account age."""
    obj: dict[str, Any] = {
        "id": user.id,
        "username": user.username,
        "age": age_on(user.birthdate, on or today()),
        "role": user.role,
        "status": user.status,
        "created": user.created,
    }
    if user.org:
        obj["org"] = user.org
    if user.status == "banned":
        obj["banned_until"] = user.banned_until
    return obj


def _party(user: User | None, on: datetime.date) -> dict[str, Any] | None:
    if user is None:
        return None
    obj: dict[str, Any] = {
        "id": user.id,
        "username": user.username,
        "age": age_on(user.birthdate, on),
        "status": user.status,
    }
    if user.org:
        obj["org"] = user.org
    return obj


def report_object(
    report: Report, users: Mapping[int, User], *, on: datetime.date | None = None
) -> dict[str, Any]:
    """PROTOCOL.md section 4's report object, and more (note, resolution, moderator)."""
    day = on or today()

    def who(user_id: int | None) -> User | None:
        return None if user_id is None else users.get(user_id)

    return {
        "id": report.id,
        "case": report.case_id,
        "category": report.category,
        "priority": report.priority,
        "reasons": list(report.reasons),
        "status": report.status,
        "resolution": report.resolution,
        "reporter": _party(who(report.reporter_id), day),
        "target": _party(who(report.target_user_id), day),
        "conv": report.conv_id,
        "msg": report.message_id,
        "note": report.note,
        "created": report.created,
        "moderator": ref(who(report.moderator_id)),
        "claimed": report.claimed,
        "resolved": report.resolved,
    }


def report_user_ids(report: Report) -> set[int]:
    """The accounts a report object names."""
    ids = {report.reporter_id}
    for user_id in (report.target_user_id, report.moderator_id):
        if user_id is not None:
            ids.add(user_id)
    return ids


def snapshot_message(m: SnapshotMessage) -> dict[str, Any]:
    """A message object as frozen; its text stays, also where members see it removed."""
    obj: dict[str, Any] = {
        "conv": m.conv,
        "id": m.message_id,
        "seq": m.seq,
        "from": {"id": m.sender_id, "username": m.sender_username},
        "text": m.text,
        "ts": m.ts,
    }
    if m.removed:
        obj["removed"] = True
    return obj


def message_object(m: Message, *, text: bool) -> dict[str, Any]:
    """A message object (a `msg` frame without `t`). With text, a removed message keeps
    its text (for moderators who may read it); without, it looks as members see it."""
    obj: dict[str, Any] = {
        "conv": m.conv,
        "id": m.id,
        "seq": m.seq,
        "from": {"id": m.sender_id, "username": m.sender_username},
        "text": m.text if text or not m.removed else None,
        "ts": m.ts,
        "cmid": m.cmid,
    }
    if m.removed:
        obj["removed"] = True
    return obj


def audit_object(entry: AuditEntry, users: Mapping[int, User]) -> dict[str, Any]:
    target = users.get(entry.target_user_id) if entry.target_user_id is not None else None
    obj: dict[str, Any] = {
        "id": entry.id,
        "ts": entry.ts,
        "actor": ref(users.get(entry.actor_id)) or {"id": entry.actor_id, "username": None},
        "action": entry.action,
        "target": ref(target),
        "conv": entry.conv_id,
        "msg": entry.message_id,
        "report": entry.report_id,
        "reason": entry.reason,
    }
    if entry.detail:
        obj["detail"] = json.loads(entry.detail)
    return obj
