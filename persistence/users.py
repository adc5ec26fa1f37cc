"""Accounts: create, look up, and change role, organisation and status."""

from collections.abc import Iterable
from datetime import date

from sqlalchemy import and_, select, update
from sqlalchemy.exc import IntegrityError

from persistence._sql import USER_COLUMNS, chunks, user_from_row
from persistence.database import Database
from persistence.errors import UsernameTaken
from persistence.records import User
from persistence.schema import ROLES, STATUSES, users

__all__ = ["UserStore", "UsernameTaken"]


class UserStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        *,
        username: str,
        username_key: str,
        email: str,
        email_key: str,
        password_hash: str,
        birthdate: date,
        role: str = "member",
        created: int,
    ) -> User:
        """Store a new account; UsernameTaken when another holds username_key."""
        _check_role(role)
        values = {
            "username": username,
            "username_key": username_key,
            "email": email,
            "email_key": email_key,
            "password_hash": password_hash,
            "birthdate": birthdate,
            "role": role,
            "status": "active",
            "created": created,
        }
        try:
            async with self._db.write() as conn:
                result = await conn.execute(users.insert().returning(*USER_COLUMNS), values)
                return user_from_row(result.one())
        except IntegrityError as exc:
            if await self.by_username_key(username_key) is not None:
                raise UsernameTaken(username) from exc
            raise

    async def by_id(self, id: int) -> User | None:
        async with self._db.read() as conn:
            row = (await conn.execute(select(*USER_COLUMNS).where(users.c.id == id))).first()
        return user_from_row(row) if row is not None else None

    async def by_username_key(self, key: str) -> User | None:
        async with self._db.read() as conn:
            query = select(*USER_COLUMNS).where(users.c.username_key == key)
            row = (await conn.execute(query)).first()
        return user_from_row(row) if row is not None else None

    async def set_role(self, id: int, role: str) -> None:
        _check_role(role)
        async with self._db.write() as conn:
            await conn.execute(update(users).where(users.c.id == id).values(role=role))

    async def set_org(self, id: int, org: str | None) -> None:
        async with self._db.write() as conn:
            await conn.execute(update(users).where(users.c.id == id).values(org=org))

    async def set_status(self, id: int, status: str, banned_until: int | None = None) -> None:
        """Set the status; banned_until (ms) only means something for a ban, else it clears."""
        if status not in STATUSES:
            raise ValueError(f"unknown status: {status!r}")
        until = banned_until if status == "banned" else None
        async with self._db.write() as conn:
            await conn.execute(
                update(users).where(users.c.id == id).values(status=status, banned_until=until)
            )

    async def usernames(self, ids: Iterable[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        for part in chunks(ids):
            async with self._db.read() as conn:
                query = select(users.c.id, users.c.username).where(users.c.id.in_(part))
                found.update((row.id, row.username) for row in await conn.execute(query))
        return found

    async def lift_expired_bans(self, now: int) -> list[int]:
        """Make active every account whose timed ban ended by now; the ids lifted."""
        statement = (
            update(users)
            .where(
                and_(
                    users.c.status == "banned",
                    users.c.banned_until.is_not(None),
                    users.c.banned_until <= now,
                )
            )
            .values(status="active", banned_until=None)
            .returning(users.c.id)
        )
        async with self._db.write() as conn:
            return sorted(row.id for row in await conn.execute(statement))


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown role: {role!r}")
