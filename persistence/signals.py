"""Signals for the safety work: accounts that share a device or a mailbox, registrations
over time, and accounts looked up in bulk."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from sqlalchemy import and_, select

from persistence._sql import USER_COLUMNS, user_from_row
from persistence.database import Database
from persistence.records import User
from persistence.schema import sightings, users

__all__ = ["SignalStore"]


class SignalStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def sharing_device(self, user_id: int, limit: int) -> list[int]:
        """Other accounts seen on a device that this account was seen on, by id."""
        mine = select(sightings.c.device).where(
            and_(sightings.c.user_id == user_id, sightings.c.device.is_not(None))
        )
        query = (
            select(sightings.c.user_id)
            .where(
                and_(
                    sightings.c.device.in_(mine.scalar_subquery()),
                    sightings.c.user_id != user_id,
                )
            )
            .distinct()
            .order_by(sightings.c.user_id)
            .limit(limit)
        )
        async with self._db.read() as conn:
            return [int(row.user_id) for row in await conn.execute(query)]

    async def sharing_email(self, user_id: int, limit: int) -> list[int]:
        """Other accounts whose normalised e-mail (email_key) equals this account's."""
        key = select(users.c.email_key).where(users.c.id == user_id).scalar_subquery()
        query = (
            select(users.c.id)
            .where(and_(users.c.email_key == key, users.c.id != user_id))
            .order_by(users.c.id)
            .limit(limit)
        )
        async with self._db.read() as conn:
            return [int(row.id) for row in await conn.execute(query)]

    async def users(self, ids: Iterable[int]) -> dict[int, User]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        query = select(*USER_COLUMNS).where(users.c.id.in_(wanted))
        async with self._db.read() as conn:
            found = [user_from_row(row) for row in await conn.execute(query)]
        return {user.id: user for user in found}

    async def registrations_since(self, since_ms: int) -> list[tuple[int, date]]:
        """(created ms, birthdate) of every account created at or after since_ms."""
        query = (
            select(users.c.created, users.c.birthdate)
            .where(users.c.created >= since_ms)
            .order_by(users.c.created)
        )
        async with self._db.read() as conn:
            return [(int(row.created), row.birthdate) for row in await conn.execute(query)]
