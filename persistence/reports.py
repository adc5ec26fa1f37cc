"""Reports, the cases they share, and the snapshots frozen when they were made."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence._sql import AnyRow, insert_ignoring
from persistence.database import Database
from persistence.messages import message_from_row, message_query
from persistence.records import Message, Report, SnapshotMessage
from persistence.schema import RESOLUTIONS, cases, messages, report_snapshots, reports

__all__ = ["Around", "Latest", "NewReport", "ReportStore", "SnapshotSpec"]

# Resolutions that mean a moderator acted on the report.
ACTIONED = tuple(r for r in RESOLUTIONS if r != "dismissed")
# Rows one listing returns at most, whatever the caller asks.
MAX_LIST = 1000


@dataclass(frozen=True, slots=True)
class Around:
    """The message with `seq` in conv, with up to `before` messages before it and `after` after."""

    conv: int
    seq: int
    before: int
    after: int


@dataclass(frozen=True, slots=True)
class Latest:
    """The last `limit` messages of conv; only those of `sender` when it is given."""

    conv: int
    limit: int
    sender: int | None = None


SnapshotSpec = Around | Latest | None


@dataclass(frozen=True, slots=True)
class NewReport:
    case_key: str
    case_user_id: int | None
    case_conv_id: int | None
    reporter_id: int
    category: str
    target_user_id: int | None
    conv_id: int | None
    message_id: int | None
    note: str | None
    created: int
    priority: int
    reasons: tuple[str, ...]


_REPORT_COLUMNS = (
    reports.c.id,
    reports.c.case_id,
    reports.c.reporter_id,
    reports.c.category,
    reports.c.target_user_id,
    reports.c.conv_id,
    reports.c.message_id,
    reports.c.note,
    reports.c.created,
    reports.c.priority,
    reports.c.reasons,
    reports.c.status,
    reports.c.resolution,
    reports.c.moderator_id,
    reports.c.claimed,
    reports.c.resolved,
    reports.c.resolution_note,
)


def _report(row: AnyRow) -> Report:
    values = list(row[: len(_REPORT_COLUMNS)])
    values[10] = tuple(json.loads(values[10]))
    return Report(*values)


# Highest priority first; of equal priority, the one waiting longest.
_QUEUE_ORDER = (reports.c.priority.desc(), reports.c.created, reports.c.id)


class ReportStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._insert_case = insert_ignoring(db.dialect, cases, (cases.c.target_key,))

    # -- opening -------------------------------------------------------------------------

    async def reporters_of(self, case_key: str) -> set[int]:
        """The distinct reporters of the case on this target so far (none: no case yet)."""
        query = (
            select(reports.c.reporter_id)
            .join(cases, cases.c.id == reports.c.case_id)
            .where(cases.c.target_key == case_key)
            .distinct()
        )
        async with self._db.read() as conn:
            return {int(row.reporter_id) for row in await conn.execute(query)}

    async def open(self, new: NewReport, snapshot: SnapshotSpec) -> Report:
        """Stores the report in its case (made if new) and freezes its snapshot, in one
        transaction: what the snapshot holds is what members saw at that moment."""
        async with self._db.write() as conn:
            await conn.execute(
                self._insert_case,
                {
                    "target_key": new.case_key,
                    "target_user_id": new.case_user_id,
                    "conv_id": new.case_conv_id,
                    "created": new.created,
                },
            )
            case_query = select(cases.c.id).where(cases.c.target_key == new.case_key)
            case_id = int((await conn.execute(case_query)).scalar_one())
            values = {
                "case_id": case_id,
                "reporter_id": new.reporter_id,
                "category": new.category,
                "target_user_id": new.target_user_id,
                "conv_id": new.conv_id,
                "message_id": new.message_id,
                "note": new.note,
                "created": new.created,
                "priority": new.priority,
                "reasons": json.dumps(list(new.reasons)),
                "status": "open",
            }
            row = (await conn.execute(reports.insert().returning(*_REPORT_COLUMNS), values)).one()
            report = _report(row)
            frozen = await _snapshot_rows(conn, snapshot)
            if frozen:
                await conn.execute(
                    report_snapshots.insert(),
                    [
                        {
                            "report_id": report.id,
                            "position": position,
                            "message_id": m.id,
                            "conv_id": m.conv,
                            "seq": m.seq,
                            "sender_id": m.sender_id,
                            "sender_username": m.sender_username,
                            "text": m.text,
                            "ts": m.ts,
                            "removed": m.removed,
                        }
                        for position, m in enumerate(frozen)
                    ],
                )
        return report

    # -- reading -------------------------------------------------------------------------

    async def get(self, report_id: int) -> Report | None:
        async with self._db.read() as conn:
            query = select(*_REPORT_COLUMNS).where(reports.c.id == report_id)
            row = (await conn.execute(query)).first()
        return _report(row) if row is not None else None

    async def snapshot(self, report_id: int) -> list[SnapshotMessage]:
        """The frozen messages of a report, in the order they were taken (conv, seq)."""
        s = report_snapshots.c
        query = (
            select(s.message_id, s.conv_id, s.seq, s.sender_id, s.sender_username, s.text)
            .add_columns(s.ts, s.removed)
            .where(s.report_id == report_id)
            .order_by(s.position)
        )
        async with self._db.read() as conn:
            return [
                SnapshotMessage(
                    int(r.message_id),
                    int(r.conv_id),
                    int(r.seq),
                    int(r.sender_id),
                    r.sender_username,
                    r.text,
                    int(r.ts),
                    bool(r.removed),
                )
                for r in await conn.execute(query)
            ]

    async def queue(self, statuses: Iterable[str] | None, limit: int) -> list[Report]:
        """Reports of the given statuses (None: all), highest priority first."""
        query = select(*_REPORT_COLUMNS).order_by(*_QUEUE_ORDER).limit(min(limit, MAX_LIST))
        if statuses is not None:
            query = query.where(reports.c.status.in_(sorted(set(statuses))))
        async with self._db.read() as conn:
            return [_report(row) for row in await conn.execute(query)]

    async def in_case(self, case_id: int) -> list[Report]:
        query = select(*_REPORT_COLUMNS).where(reports.c.case_id == case_id).order_by(reports.c.id)
        async with self._db.read() as conn:
            return [_report(row) for row in await conn.execute(query)]

    async def about(self, user_id: int, limit: int) -> list[Report]:
        """Reports naming the user as their target, newest first."""
        return await self._newest(reports.c.target_user_id == user_id, limit)

    async def by_reporter(self, user_id: int, limit: int) -> list[Report]:
        return await self._newest(reports.c.reporter_id == user_id, limit)

    async def _newest(self, where: Any, limit: int) -> list[Report]:
        query = (
            select(*_REPORT_COLUMNS)
            .where(where)
            .order_by(reports.c.id.desc())
            .limit(min(limit, MAX_LIST))
        )
        async with self._db.read() as conn:
            return [_report(row) for row in await conn.execute(query)]

    async def actioned_about(self, user_id: int) -> int:
        """Reports about the user that a moderator acted on (not dismissed)."""
        query = (
            select(func.count())
            .select_from(reports)
            .where(
                and_(
                    reports.c.target_user_id == user_id,
                    reports.c.status == "resolved",
                    reports.c.resolution.in_(ACTIONED),
                )
            )
        )
        async with self._db.read() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def track_record(self, reporter_id: int) -> tuple[int, int]:
        """(acted on, dismissed): how the reporter's resolved reports ended."""
        query = (
            select(reports.c.resolution, func.count())
            .where(and_(reports.c.reporter_id == reporter_id, reports.c.status == "resolved"))
            .group_by(reports.c.resolution)
        )
        acted = dismissed = 0
        async with self._db.read() as conn:
            for resolution, n in await conn.execute(query):
                if resolution == "dismissed":
                    dismissed += int(n)
                else:
                    acted += int(n)
        return acted, dismissed

    async def covering_dm(self, conv_id: int, a: int, b: int) -> list[Report]:
        """Reports that are not dismissed and cover the DM conv_id between a and b: those
        naming it or a message of it, and those naming only a user, made by one of the two
        about the other."""
        r = reports.c
        names_conv = r.conv_id == conv_id
        only_user = and_(
            r.conv_id.is_(None),
            r.message_id.is_(None),
            or_(
                and_(r.reporter_id == a, r.target_user_id == b),
                and_(r.reporter_id == b, r.target_user_id == a),
            ),
        )
        not_dismissed = or_(r.resolution.is_(None), r.resolution != "dismissed")
        query = (
            select(*_REPORT_COLUMNS)
            .where(and_(or_(names_conv, only_user), not_dismissed))
            .order_by(r.id)
        )
        async with self._db.read() as conn:
            return [_report(row) for row in await conn.execute(query)]

    # -- changing ------------------------------------------------------------------------

    async def claim(self, report_id: int, moderator_id: int, now: int) -> Report | None:
        """Marks an open or claimed report as claimed by the moderator; None if resolved
        or unknown."""
        statement = (
            update(reports)
            .where(and_(reports.c.id == report_id, reports.c.status != "resolved"))
            .values(status="claimed", moderator_id=moderator_id, claimed=now)
            .returning(*_REPORT_COLUMNS)
        )
        async with self._db.write() as conn:
            row = (await conn.execute(statement)).first()
        return _report(row) if row is not None else None

    async def resolve_case(
        self, case_id: int, moderator_id: int, resolution: str, note: str | None, now: int
    ) -> list[Report]:
        """Resolves every report of the case that is still open or claimed; those reports."""
        if resolution not in RESOLUTIONS:
            raise ValueError(f"unknown resolution: {resolution!r}")
        statement = (
            update(reports)
            .where(and_(reports.c.case_id == case_id, reports.c.status != "resolved"))
            .values(
                status="resolved",
                resolution=resolution,
                moderator_id=moderator_id,
                resolved=now,
                resolution_note=note,
            )
            .returning(*_REPORT_COLUMNS)
        )
        async with self._db.write() as conn:
            rows = (await conn.execute(statement)).all()
        return sorted((_report(row) for row in rows), key=lambda rep: rep.id)


async def _snapshot_rows(conn: AsyncConnection, spec: SnapshotSpec) -> list[Message]:
    if spec is None:
        return []
    query = message_query()
    if isinstance(spec, Around):
        low, high = spec.seq - spec.before, spec.seq + spec.after
        query = query.where(
            and_(messages.c.conv_id == spec.conv, messages.c.seq.between(low, high))
        ).order_by(messages.c.seq)
        return [message_from_row(row) for row in await conn.execute(query)]
    where = messages.c.conv_id == spec.conv
    if spec.sender is not None:
        where = and_(where, messages.c.sender_id == spec.sender)
    query = query.where(where).order_by(messages.c.seq.desc()).limit(spec.limit)
    rows = [message_from_row(row) for row in await conn.execute(query)]
    rows.reverse()
    return rows
