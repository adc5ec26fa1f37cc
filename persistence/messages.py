"""Reading messages (history, by id, by cmid), removing one from view, and the hash chain."""

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Select, and_, select

from persistence._sql import AnyRow, insert_ignoring
from persistence.chain import Content, Link, first_break
from persistence.database import Database
from persistence.records import Message
from persistence.schema import GENESIS_HASH, conversations, message_removals, messages, users

__all__ = ["MessageStore", "message_from_row", "message_query"]

# The most rows one history page may ask for (the protocol's sync limit is 500).
MAX_PAGE = 1000


def message_query() -> Select[*tuple[Any, ...]]:
    """SELECT of whole Message rows: sender's username joined, removal as a flag."""
    return select(
        messages.c.id,
        messages.c.conv_id,
        messages.c.seq,
        messages.c.sender_id,
        users.c.username,
        messages.c.text,
        messages.c.ts,
        messages.c.cmid,
        message_removals.c.id.is_not(None).label("removed"),
    ).select_from(
        messages.join(users, users.c.id == messages.c.sender_id).outerjoin(
            message_removals, message_removals.c.message_id == messages.c.id
        )
    )


def message_from_row(row: AnyRow) -> Message:
    return message_from_mapping(row._mapping)


def message_from_mapping(row: Mapping[Any, Any]) -> Message:
    """A Message from a row by column name: a SQLAlchemy row's mapping, an asyncpg record."""
    return Message(
        id=int(row["id"]),
        conv=int(row["conv_id"]),
        seq=int(row["seq"]),
        sender_id=int(row["sender_id"]),
        sender_username=row["username"],
        text=row["text"],
        ts=int(row["ts"]),
        cmid=row["cmid"],
        removed=bool(row["removed"]),
    )


class MessageStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._insert_removal = insert_ignoring(
            db.dialect, message_removals, (message_removals.c.message_id,)
        )

    async def history(self, conv_id: int, after: int, limit: int) -> tuple[list[Message], bool]:
        """Messages with seq > after, oldest first, at most limit; and whether more exist.

        Removed messages come back too, with removed=True and their text: callers hide it.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be 1 to {MAX_PAGE}")
        query = (
            message_query()
            .where(and_(messages.c.conv_id == conv_id, messages.c.seq > after))
            .order_by(messages.c.seq)
            .limit(limit + 1)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        page = [message_from_row(row) for row in rows[:limit]]
        return page, len(rows) > limit

    async def by_cmid(self, sender_id: int, cmid: str) -> Message | None:
        query = message_query().where(
            and_(messages.c.sender_id == sender_id, messages.c.cmid == cmid)
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return message_from_row(row) if row is not None else None

    async def by_id(self, id: int) -> Message | None:
        async with self._db.read() as conn:
            row = (await conn.execute(message_query().where(messages.c.id == id))).first()
        return message_from_row(row) if row is not None else None

    async def remove(self, message_id: int, by_user: int, reason: str, now: int) -> bool:
        """Remove a message from members' view (its row and text stay); False if it was
        already removed or does not exist."""
        async with self._db.write() as conn:
            query = select(messages.c.conv_id).where(messages.c.id == message_id)
            conv_id = (await conn.execute(query)).scalar()
            if conv_id is None:
                return False
            result = await conn.execute(
                self._insert_removal,
                {
                    "message_id": message_id,
                    "conv_id": conv_id,
                    "by_user": by_user,
                    "reason": reason,
                    "ts": now,
                },
            )
            return result.rowcount == 1

    async def chain(self, conv_id: int) -> list[Link]:
        """The conversation's hash chain as (seq, prev_hash, hash), in seq order."""
        query = (
            select(messages.c.seq, messages.c.prev_hash, messages.c.hash)
            .where(messages.c.conv_id == conv_id)
            .order_by(messages.c.seq)
        )
        async with self._db.read() as conn:
            return [(int(r.seq), r.prev_hash, r.hash) for r in await conn.execute(query)]

    async def verify(self, conv_id: int) -> int | None:
        """Recompute the conversation's chain from its rows: the first broken seq, or None."""
        query = (
            select(
                messages.c.seq,
                messages.c.prev_hash,
                messages.c.hash,
                messages.c.sender_id,
                messages.c.cmid,
                messages.c.text,
                messages.c.ts,
            )
            .where(messages.c.conv_id == conv_id)
            .order_by(messages.c.seq)
        )
        counter = select(conversations.c.last_seq, conversations.c.chain_head).where(
            conversations.c.id == conv_id
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
            last = (await conn.execute(counter)).first()
        links: list[Link] = [(int(r.seq), r.prev_hash, r.hash) for r in rows]
        contents: list[Content] = [
            (conv_id, int(r.seq), int(r.sender_id), r.cmid, r.text, int(r.ts)) for r in rows
        ]
        broken = first_break(links, contents)
        if broken is not None:
            return broken
        # The counter row must agree with the rows: a missing tail shows here.
        head = links[-1][2] if links else GENESIS_HASH
        if last is not None and (int(last.last_seq) != len(links) or last.chain_head != head):
            return len(links) + 1
        return None
