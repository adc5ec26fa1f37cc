"""Alerts raised for the moderators (ban evasion and the like); rows are only appended."""

from __future__ import annotations

from sqlalchemy import select

from persistence.database import Database
from persistence.records import Alert
from persistence.schema import alerts

__all__ = ["AlertStore"]

# Alerts one listing returns at most.
MAX_ALERTS = 1000

_COLUMNS = (alerts.c.id, alerts.c.ts, alerts.c.kind, alerts.c.user_id, alerts.c.detail)


class AlertStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, *, ts: int, kind: str, user_id: int | None, detail: str) -> Alert:
        """Stores an alert (detail: a JSON object as text)."""
        values = {"ts": ts, "kind": kind, "user_id": user_id, "detail": detail}
        async with self._db.write() as conn:
            row = (await conn.execute(alerts.insert().returning(*_COLUMNS), values)).one()
        return Alert(*row)

    async def recent(self, limit: int) -> list[Alert]:
        """Newest first."""
        query = select(*_COLUMNS).order_by(alerts.c.id.desc()).limit(min(limit, MAX_ALERTS))
        async with self._db.read() as conn:
            return [Alert(*row) for row in await conn.execute(query)]
