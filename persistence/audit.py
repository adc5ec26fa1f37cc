"""The audit log: one row per moderator read, action or refused attempt; rows are only
ever appended (the database refuses updates and deletes)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, func, select

from persistence._sql import AnyRow
from persistence.database import Database
from persistence.records import AuditEntry
from persistence.schema import audit_log

__all__ = ["AuditStore"]

# Entries one listing returns at most.
MAX_ENTRIES = 1000

_COLUMNS = (
    audit_log.c.id,
    audit_log.c.ts,
    audit_log.c.actor_id,
    audit_log.c.action,
    audit_log.c.target_user_id,
    audit_log.c.conv_id,
    audit_log.c.message_id,
    audit_log.c.report_id,
    audit_log.c.reason,
    audit_log.c.detail,
)


def _entry(row: AnyRow) -> AuditEntry:
    return AuditEntry(
        id=int(row.id),
        ts=int(row.ts),
        actor_id=int(row.actor_id),
        action=row.action,
        target_user_id=row.target_user_id,
        conv_id=row.conv_id,
        message_id=row.message_id,
        report_id=row.report_id,
        reason=row.reason,
        detail=row.detail,
    )


class AuditStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(
        self,
        *,
        ts: int,
        actor_id: int,
        action: str,
        target_user_id: int | None = None,
        conv_id: int | None = None,
        message_id: int | None = None,
        report_id: int | None = None,
        reason: str | None = None,
        detail: str | None = None,
    ) -> int:
        """Appends one entry (detail: a JSON object as text); its id."""
        values = {
            "ts": ts,
            "actor_id": actor_id,
            "action": action,
            "target_user_id": target_user_id,
            "conv_id": conv_id,
            "message_id": message_id,
            "report_id": report_id,
            "reason": reason,
            "detail": detail,
        }
        async with self._db.write() as conn:
            result = await conn.execute(audit_log.insert().returning(audit_log.c.id), values)
            return int(result.scalar_one())

    async def entries(
        self, *, actor_id: int | None = None, target_user_id: int | None = None, limit: int
    ) -> list[AuditEntry]:
        """Newest first, filtered by actor and target when given."""
        conditions: list[Any] = []
        if actor_id is not None:
            conditions.append(audit_log.c.actor_id == actor_id)
        if target_user_id is not None:
            conditions.append(audit_log.c.target_user_id == target_user_id)
        query = select(*_COLUMNS).order_by(audit_log.c.id.desc()).limit(min(limit, MAX_ENTRIES))
        if conditions:
            query = query.where(and_(*conditions))
        async with self._db.read() as conn:
            return [_entry(row) for row in await conn.execute(query)]

    async def count_about(self, target_user_id: int, actions: Iterable[str]) -> int:
        """How many entries with one of these actions name the user as their target."""
        query = (
            select(func.count())
            .select_from(audit_log)
            .where(
                and_(
                    audit_log.c.target_user_id == target_user_id,
                    audit_log.c.action.in_(sorted(set(actions))),
                )
            )
        )
        async with self._db.read() as conn:
            return int((await conn.execute(query)).scalar_one())
