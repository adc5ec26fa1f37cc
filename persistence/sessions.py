"""Login sessions, found by the SHA-256 of their bearer token, and their revocation."""

from collections.abc import Iterable

from sqlalchemy import and_, select, update

from persistence._sql import USER_COLUMNS, chunks, user_from_row
from persistence.database import Database
from persistence.records import User
from persistence.schema import sessions, users

__all__ = ["SessionStore"]


class SessionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        *,
        user_id: int,
        token_hash: str,
        created: int,
        device: str | None,
        address: str | None,
        user_agent: str | None,
    ) -> int:
        """Store a session; token_hash is the SHA-256 hex of the token, never the token."""
        values = {
            "user_id": user_id,
            "token_hash": token_hash,
            "created": created,
            "device": device,
            "address": address,
            "user_agent": user_agent,
        }
        async with self._db.write() as conn:
            result = await conn.execute(sessions.insert().returning(sessions.c.id), values)
            return int(result.scalar_one())

    async def by_token_hash(self, token_hash: str) -> tuple[int, User] | None:
        """The session id and its account, for a session that is not revoked."""
        query = (
            select(*USER_COLUMNS, sessions.c.id.label("session_id"))
            .join(sessions, sessions.c.user_id == users.c.id)
            .where(and_(sessions.c.token_hash == token_hash, sessions.c.revoked.is_(None)))
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return int(row.session_id), user_from_row(row)

    async def revoke(self, session_id: int, now: int) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                update(sessions)
                .where(and_(sessions.c.id == session_id, sessions.c.revoked.is_(None)))
                .values(revoked=now)
            )

    async def revoke_all(self, user_id: int, now: int) -> list[int]:
        """Revoke every live session of the account; the ids that this call revoked."""
        statement = (
            update(sessions)
            .where(and_(sessions.c.user_id == user_id, sessions.c.revoked.is_(None)))
            .values(revoked=now)
            .returning(sessions.c.id)
        )
        async with self._db.write() as conn:
            return sorted(row.id for row in await conn.execute(statement))

    async def is_active(self, session_id: int) -> bool:
        return bool(await self.active_ids([session_id]))

    async def active_ids(self, session_ids: Iterable[int]) -> set[int]:
        """Those of session_ids that exist and are not revoked."""
        active: set[int] = set()
        for part in chunks(session_ids):
            query = select(sessions.c.id).where(
                and_(sessions.c.id.in_(part), sessions.c.revoked.is_(None))
            )
            async with self._db.read() as conn:
                active.update(row.id for row in await conn.execute(query))
        return active
