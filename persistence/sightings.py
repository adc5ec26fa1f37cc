"""Where an account was seen registering or logging in (device, address, user agent)."""

from sqlalchemy import select

from persistence.database import Database
from persistence.records import Sighting
from persistence.schema import SIGHTING_KINDS, sightings

__all__ = ["SightingStore"]


class SightingStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(
        self,
        *,
        user_id: int,
        kind: str,
        ts: int,
        device: str | None,
        address: str | None,
        user_agent: str | None,
    ) -> None:
        if kind not in SIGHTING_KINDS:
            raise ValueError(f"unknown sighting kind: {kind!r}")
        values = {
            "user_id": user_id,
            "kind": kind,
            "ts": ts,
            "device": device,
            "address": address,
            "user_agent": user_agent,
        }
        async with self._db.write() as conn:
            await conn.execute(sightings.insert(), values)

    async def for_user(self, user_id: int, kind: str | None = None) -> list[Sighting]:
        """The account's sightings, oldest first; of one kind when kind is given."""
        query = select(
            sightings.c.ts,
            sightings.c.kind,
            sightings.c.device,
            sightings.c.address,
            sightings.c.user_agent,
        ).where(sightings.c.user_id == user_id)
        if kind is not None:
            query = query.where(sightings.c.kind == kind)
        query = query.order_by(sightings.c.ts, sightings.c.id)
        async with self._db.read() as conn:
            return [Sighting(*row) for row in await conn.execute(query)]
