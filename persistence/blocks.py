"""Blocks between two accounts (they stop DMs both ways; rooms are untouched)."""

from sqlalchemy import and_, delete, or_, select, union

from persistence._sql import insert_ignoring
from persistence.database import Database
from persistence.schema import blocks

__all__ = ["BlockStore"]


class BlockStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def block(self, blocker: int, blocked: int, now: int) -> None:
        """Idempotent: blocking twice keeps the first block's time."""
        statement = insert_ignoring(
            self._db.dialect, blocks, (blocks.c.blocker_id, blocks.c.blocked_id)
        )
        async with self._db.write() as conn:
            await conn.execute(
                statement, {"blocker_id": blocker, "blocked_id": blocked, "created": now}
            )

    async def unblock(self, blocker: int, blocked: int) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                delete(blocks).where(
                    and_(blocks.c.blocker_id == blocker, blocks.c.blocked_id == blocked)
                )
            )

    async def blocked_between(self, a: int, b: int) -> bool:
        """True while either account blocks the other."""
        query = (
            select(blocks.c.blocker_id)
            .where(
                or_(
                    and_(blocks.c.blocker_id == a, blocks.c.blocked_id == b),
                    and_(blocks.c.blocker_id == b, blocks.c.blocked_id == a),
                )
            )
            .limit(1)
        )
        async with self._db.read() as conn:
            return (await conn.execute(query)).first() is not None

    async def blocked_by(self, blocker: int) -> list[int]:
        """The accounts that blocker blocks, by id."""
        query = (
            select(blocks.c.blocked_id)
            .where(blocks.c.blocker_id == blocker)
            .order_by(blocks.c.blocked_id)
        )
        async with self._db.read() as conn:
            return [row.blocked_id for row in await conn.execute(query)]

    async def block_partners(self, user: int) -> set[int]:
        """The accounts user blocks or is blocked by: one indexed read for all of them."""
        query = union(
            select(blocks.c.blocked_id.label("other")).where(blocks.c.blocker_id == user),
            select(blocks.c.blocker_id.label("other")).where(blocks.c.blocked_id == user),
        )
        async with self._db.read() as conn:
            return {int(row.other) for row in await conn.execute(query)}
