"""Accounts, sessions and sightings."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import date

import pytest

from persistence.database import Database
from persistence.records import Sighting, User
from persistence.sessions import SessionStore
from persistence.sightings import SightingStore
from persistence.users import UsernameTaken, UserStore

AddUser = Callable[..., Awaitable[User]]


async def test_create_and_look_up(db: Database, add_user: AddUser) -> None:
    users = UserStore(db)
    alice = await add_user("Alice", created=1234)
    assert alice.username == "Alice" and alice.role == "member" and alice.status == "active"
    assert alice.birthdate == date(2000, 1, 2) and alice.created == 1234
    assert alice.banned_until is None and alice.org is None
    assert await users.by_id(alice.id) == alice
    assert await users.by_username_key("alice") == alice
    assert await users.by_id(alice.id + 100) is None
    assert await users.by_username_key("nobody") is None


async def test_username_taken_without_regard_to_case(db: Database, add_user: AddUser) -> None:
    await add_user("Alice")
    with pytest.raises(UsernameTaken):
        await add_user("ALICE")


async def test_role_org_status_and_usernames(db: Database, add_user: AddUser) -> None:
    users = UserStore(db)
    alice, bob = await add_user("alice"), await add_user("bob")
    await users.set_role(alice.id, "moderator")
    await users.set_org(alice.id, "Outreach")
    await users.set_status(bob.id, "banned", banned_until=5_000)
    got_alice, got_bob = await users.by_id(alice.id), await users.by_id(bob.id)
    assert got_alice is not None and got_bob is not None
    assert (got_alice.role, got_alice.org) == ("moderator", "Outreach")
    assert (got_bob.status, got_bob.banned_until) == ("banned", 5_000)
    with pytest.raises(ValueError):
        await users.set_role(alice.id, "king")
    assert await users.usernames([alice.id, bob.id, 999]) == {alice.id: "alice", bob.id: "bob"}
    assert await users.usernames([]) == {}


async def test_lift_expired_bans(db: Database, add_user: AddUser) -> None:
    users = UserStore(db)
    timed, later, forever = await add_user("a"), await add_user("b"), await add_user("c")
    await users.set_status(timed.id, "banned", banned_until=1_000)
    await users.set_status(later.id, "banned", banned_until=9_000)
    await users.set_status(forever.id, "banned")
    assert await users.lift_expired_bans(now=1_000) == [timed.id]
    assert await users.lift_expired_bans(now=1_000) == []
    lifted = await users.by_id(timed.id)
    assert lifted is not None and (lifted.status, lifted.banned_until) == ("active", None)
    still = await users.by_id(forever.id)
    assert still is not None and still.status == "banned"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def test_sessions_and_revocation(db: Database, add_user: AddUser) -> None:
    sessions = SessionStore(db)
    alice, bob = await add_user("alice"), await add_user("bob")

    async def login(user: User, token: str) -> int:
        return await sessions.create(
            user_id=user.id,
            token_hash=_hash(token),
            created=10,
            device="dev-1",
            address="192.0.2.1",
            user_agent="test",
        )

    s1, s2, s3 = await login(alice, "t1"), await login(alice, "t2"), await login(bob, "t3")
    found = await sessions.by_token_hash(_hash("t1"))
    assert found is not None and found[0] == s1 and found[1].id == alice.id
    assert await sessions.by_token_hash(_hash("unknown")) is None

    await sessions.revoke(s1, now=20)
    assert await sessions.by_token_hash(_hash("t1")) is None
    assert not await sessions.is_active(s1) and await sessions.is_active(s2)
    assert await sessions.active_ids([s1, s2, s3, 999]) == {s2, s3}

    many = range(1, 12_001)  # more ids than one IN list takes: asked in chunks
    assert await sessions.active_ids([*many, s2]) == {s2, s3} & set([*many, s2])
    assert await UserStore(db).usernames(many) == {alice.id: "alice", bob.id: "bob"}

    assert await sessions.revoke_all(alice.id, now=30) == [s2]  # s1 was revoked already
    assert await sessions.active_ids([s1, s2, s3]) == {s3}
    assert await sessions.revoke_all(alice.id, now=40) == []


async def test_sightings(db: Database, add_user: AddUser) -> None:
    sightings = SightingStore(db)
    alice = await add_user("alice")
    await sightings.record(
        user_id=alice.id, kind="registration", ts=1, device="d", address="a", user_agent="u"
    )
    await sightings.record(
        user_id=alice.id, kind="login", ts=2, device="d2", address=None, user_agent=None
    )
    assert await sightings.for_user(alice.id) == [
        Sighting(1, "registration", "d", "a", "u"),
        Sighting(2, "login", "d2", None, None),
    ]
    assert await sightings.for_user(alice.id, "login") == [Sighting(2, "login", "d2", None, None)]
    with pytest.raises(ValueError):
        await sightings.record(
            user_id=alice.id, kind="visit", ts=3, device=None, address=None, user_agent=None
        )
