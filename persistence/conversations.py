"""Conversations (DMs and rooms), their members and their last seq."""

import json
from collections import defaultdict
from collections.abc import Mapping

from sqlalchemy import and_, delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.selectable import ScalarSelect

from persistence._sql import insert_ignoring
from persistence.database import Database
from persistence.records import Conversation, Member
from persistence.schema import conversations, members, users

__all__ = ["ConversationStore", "dm_key"]

_CONV_COLUMNS = (
    conversations.c.id,
    conversations.c.kind,
    conversations.c.name,
    conversations.c.last_seq,
)


_AHEAD_PG = text(
    "SELECT c.id, c.last_seq FROM unnest(CAST(:ids AS BIGINT[]), CAST(:lasts AS BIGINT[])) "
    "AS k(id, last) JOIN conversations AS c ON c.id = k.id WHERE c.last_seq > k.last"
)
_AHEAD_SQLITE = text(
    "SELECT c.id, c.last_seq FROM json_each(:known) AS k "
    "JOIN conversations AS c ON c.id = json_extract(k.value, '$[0]') "
    "WHERE c.last_seq > json_extract(k.value, '$[1]')"
)


def dm_key(a: int, b: int) -> str:
    """The one key of the DM between a and b, whichever of them asks."""
    low, high = sorted((a, b))
    return f"{low}:{high}"


class ConversationStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._insert_conv_by_dm = insert_ignoring(
            db.dialect, conversations, (conversations.c.dm_key,)
        ).returning(conversations.c.id)
        self._insert_conv_by_name = insert_ignoring(
            db.dialect, conversations, (conversations.c.name_key,)
        ).returning(conversations.c.id)
        self._insert_member = insert_ignoring(
            db.dialect, members, (members.c.conv_id, members.c.user_id)
        )

    async def open_dm(self, a: int, b: int, now: int) -> tuple[Conversation, bool]:
        """The DM between a and b, created (by a, with both as members) if new; created?

        Race-safe across processes: the unique dm_key decides which insert wins, and the
        loser reads the winner's row.
        """
        if a == b:
            raise ValueError("a DM needs two different accounts")
        key = dm_key(a, b)
        async with self._db.write() as conn:
            new_id = (
                await conn.execute(
                    self._insert_conv_by_dm,
                    {"kind": "dm", "dm_key": key, "opened_by": a, "created": now},
                )
            ).scalar()
            created = new_id is not None
            if created:
                conv_id = int(new_id)
            else:
                query = select(conversations.c.id).where(conversations.c.dm_key == key)
                conv_id = int((await conn.execute(query)).scalar_one())
            # Both members, always: a DM's membership never changes after it opens.
            await conn.execute(
                self._insert_member,
                [
                    {"conv_id": conv_id, "user_id": a, "joined": now},
                    {"conv_id": conv_id, "user_id": b, "joined": now},
                ],
            )
            conv = await _load_one(conn, conv_id)
        assert conv is not None
        return conv, created

    async def dm_between(self, a: int, b: int) -> int | None:
        query = select(conversations.c.id).where(conversations.c.dm_key == dm_key(a, b))
        async with self._db.read() as conn:
            found = (await conn.execute(query)).scalar()
        return int(found) if found is not None else None

    async def join_room(
        self, key: str, name: str, user_id: int, now: int, *, create: bool
    ) -> tuple[Conversation, bool] | None:
        """Join the room whose name_key is key; (room, newly joined?), None if none exists.

        With create, a missing room is made with the display name; concurrent creators of
        one key all end up in the same room.
        """
        async with self._db.write() as conn:
            conv_id: int | None = None
            if create:
                new_id = (
                    await conn.execute(
                        self._insert_conv_by_name,
                        {
                            "kind": "room",
                            "name": name,
                            "name_key": key,
                            "opened_by": user_id,
                            "created": now,
                        },
                    )
                ).scalar()
                conv_id = int(new_id) if new_id is not None else None
            if conv_id is None:
                query = select(conversations.c.id).where(
                    and_(conversations.c.name_key == key, conversations.c.kind == "room")
                )
                found = (await conn.execute(query)).scalar()
                if found is None:
                    return None
                conv_id = int(found)
            result = await conn.execute(
                self._insert_member, {"conv_id": conv_id, "user_id": user_id, "joined": now}
            )
            joined = result.rowcount == 1
            conv = await _load_one(conn, conv_id)
        assert conv is not None
        return conv, joined

    async def leave(self, conv_id: int, user_id: int) -> bool:
        """Leave a room; False when not a member, or when conv_id is a DM (never left)."""
        rooms = select(conversations.c.id).where(
            and_(conversations.c.id == conv_id, conversations.c.kind == "room")
        )
        statement = delete(members).where(
            and_(
                members.c.conv_id == conv_id,
                members.c.user_id == user_id,
                members.c.conv_id.in_(rooms.scalar_subquery()),
            )
        )
        async with self._db.write() as conn:
            return (await conn.execute(statement)).rowcount == 1

    async def get(self, conv_id: int) -> Conversation | None:
        async with self._db.read() as conn:
            return await _load_one(conn, conv_id)

    async def for_user(self, user_id: int) -> list[Conversation]:
        """Every conversation the user is a member of, by id; two queries in all."""
        query = (
            select(*_CONV_COLUMNS)
            .join(members, members.c.conv_id == conversations.c.id)
            .where(members.c.user_id == user_id)
            .order_by(conversations.c.id)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
            if not rows:
                return []
            mine = select(members.c.conv_id).where(members.c.user_id == user_id)
            who = await _members_of(conn, mine.scalar_subquery())
        return [_conversation(row.id, row.kind, row.name, row.last_seq, who) for row in rows]

    async def is_member(self, conv_id: int, user_id: int) -> bool:
        query = select(members.c.user_id).where(
            and_(members.c.conv_id == conv_id, members.c.user_id == user_id)
        )
        async with self._db.read() as conn:
            return (await conn.execute(query)).first() is not None

    async def member_ids(self, conv_id: int) -> list[int]:
        query = (
            select(members.c.user_id)
            .where(members.c.conv_id == conv_id)
            .order_by(members.c.user_id)
        )
        async with self._db.read() as conn:
            return [row.user_id for row in await conn.execute(query)]

    async def last_seq(self, conv_id: int) -> int:
        """The conversation's last committed seq; 0 when empty or unknown."""
        query = select(conversations.c.last_seq).where(conversations.c.id == conv_id)
        async with self._db.read() as conn:
            found = (await conn.execute(query)).scalar()
        return int(found) if found is not None else 0

    async def ahead_of(self, known: Mapping[int, int]) -> dict[int, int]:
        """Those of the conversations whose last committed seq is past the one known
        (conv id -> seq), with that seq.

        One statement with the pairs as one parameter, whatever their number: a node
        checks every conversation it serves this way every few seconds, and the answer
        is nearly always empty."""
        if not known:
            return {}
        params: dict[str, object]
        if self._db.dialect == "postgresql":
            query, params = _AHEAD_PG, {"ids": list(known), "lasts": list(known.values())}
        else:
            query, params = _AHEAD_SQLITE, {"known": json.dumps(list(known.items()))}
        async with self._db.read() as conn:
            rows = await conn.execute(query, params)
            return {int(row.id): int(row.last_seq) for row in rows}

    async def count_dm_partners_since(self, user_id: int, since_ms: int) -> int:
        """DMs this user opened (with someone new: an existing DM is not reopened) since then."""
        query = (
            select(func.count())
            .select_from(conversations)
            .where(
                and_(
                    conversations.c.opened_by == user_id,
                    conversations.c.kind == "dm",
                    conversations.c.created >= since_ms,
                )
            )
        )
        async with self._db.read() as conn:
            return int((await conn.execute(query)).scalar_one())


async def _members_of(
    conn: AsyncConnection, conv_ids: list[int] | ScalarSelect[int]
) -> dict[int, list[Member]]:
    """Members by conversation, for a list of ids or a subquery that selects them."""
    query = (
        select(members.c.conv_id, users.c.id, users.c.username)
        .join(users, users.c.id == members.c.user_id)
        .where(members.c.conv_id.in_(conv_ids))
        .order_by(members.c.conv_id, users.c.id)
    )
    who: dict[int, list[Member]] = defaultdict(list)
    for row in await conn.execute(query):
        who[row.conv_id].append(Member(row.id, row.username))
    return who


async def _load_one(conn: AsyncConnection, conv_id: int) -> Conversation | None:
    row = (await conn.execute(select(*_CONV_COLUMNS).where(conversations.c.id == conv_id))).first()
    if row is None:
        return None
    who = await _members_of(conn, [conv_id])
    return _conversation(row.id, row.kind, row.name, row.last_seq, who)


def _conversation(
    conv_id: int, kind: str, name: str | None, last_seq: int, who: dict[int, list[Member]]
) -> Conversation:
    title = name if kind == "room" else None
    return Conversation(conv_id, kind, title, tuple(who.get(conv_id, ())), int(last_seq))
