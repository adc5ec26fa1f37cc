"""Moderation's storage on SQLite and PostgreSQL: migration 0002 builds exactly the
tables of persistence.schema, evidence tables refuse updates and deletes, and the report
store's verbs (cases, snapshots, the gate's covering reports, resolving a case)."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from persistence.alerts import AlertStore
from persistence.audit import AuditStore
from persistence.conversations import ConversationStore
from persistence.database import Database
from persistence.migrate import head_revision, migrate
from persistence.records import User
from persistence.reports import Around, Latest, NewReport, ReportStore
from persistence.schema import metadata
from persistence.users import UserStore
from persistence.writer import GroupCommitWriter


@pytest.fixture
async def db(any_db_url: str) -> AsyncIterator[Database]:
    await migrate(any_db_url)
    database = await Database.connect(any_db_url)
    yield database
    await database.close()


async def _user(db: Database, name: str) -> User:
    return await UserStore(db).create(
        username=name,
        username_key=name,
        email=f"{name}@example.org",
        email_key=f"{name}@example.org",
        password_hash="x",
        birthdate=datetime.date(2000, 1, 1),
        created=1,
    )


def _new(
    case_key: str, reporter: int, target: int | None, conv: int | None, **more: object
) -> NewReport:
    fields: dict[str, object] = {
        "case_key": case_key,
        "case_user_id": target,
        "case_conv_id": None,
        "reporter_id": reporter,
        "category": "harassment",
        "target_user_id": target,
        "conv_id": conv,
        "message_id": None,
        "note": None,
        "created": 1000,
        "priority": 40,
        "reasons": ("category harassment",),
    }
    fields.update(more)
    return NewReport(**fields)  # type: ignore[arg-type]


async def test_migrations_match_the_schema(db: Database) -> None:
    async with db.engine.connect() as conn:

        def diff(sync: Connection) -> list[object]:
            context = MigrationContext.configure(sync, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))

        assert await conn.run_sync(diff) == []
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    assert version == head_revision() == "0002"


@pytest.mark.parametrize("table", ["audit_log", "report_snapshots", "alerts"])
async def test_evidence_is_append_only(db: Database, table: str) -> None:
    a, b = await _user(db, "a"), await _user(db, "b")
    await AuditStore(db).append(ts=1, actor_id=a.id, action="conv.read", reason="why")
    await AlertStore(db).append(ts=1, kind="ban_evasion", user_id=a.id, detail="{}")
    conv, _ = await ConversationStore(db).open_dm(a.id, b.id, 1)
    writer = GroupCommitWriter(db)
    await writer.start()
    await writer.append(
        sender_id=a.id, sender_username="a", conv_id=conv.id, cmid="c", text="t", ts=1
    )
    await writer.stop()
    await ReportStore(db).open(_new("user:1", b.id, a.id, conv.id), Latest(conv.id, 50))
    for statement in (f"UPDATE {table} SET id = id", f"DELETE FROM {table}"):
        with pytest.raises(Exception, match="append-only"):
            async with db.write() as conn:
                await conn.execute(text(statement))
    async with db.read() as conn:
        assert (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar() == 1


async def test_reports_share_a_case_and_freeze_their_snapshot(db: Database) -> None:
    a, b, c = await _user(db, "a"), await _user(db, "b"), await _user(db, "c")
    convs = ConversationStore(db)
    dm, _ = await convs.open_dm(a.id, b.id, 1)
    other, _ = await convs.open_dm(b.id, c.id, 1)
    writer = GroupCommitWriter(db)
    await writer.start()
    for n in range(1, 41):
        await writer.append(
            sender_id=(a if n % 2 else b).id,
            sender_username="x",
            conv_id=dm.id,
            cmid=f"m{n}",
            text=f"t{n}",
            ts=n,
        )
    await writer.stop()
    store = ReportStore(db)
    first = await store.open(_new(f"user:{a.id}", b.id, a.id, dm.id), Around(dm.id, 30, 20, 5))
    second = await store.open(
        _new(f"user:{a.id}", c.id, a.id, None, created=2000), Latest(dm.id, 50, sender=a.id)
    )
    assert first.case_id == second.case_id and first.status == "open"
    assert await store.reporters_of(f"user:{a.id}") == {b.id, c.id}
    assert [m.seq for m in await store.snapshot(first.id)] == list(range(10, 36))
    assert [m.text for m in await store.snapshot(second.id)] == [f"t{n}" for n in range(1, 41, 2)]

    # The gate: the report naming the DM covers it; the user-only one covers only the DMs
    # between c and a (there are none), not a's DM with b.
    assert [r.id for r in await store.covering_dm(dm.id, a.id, b.id)] == [first.id]
    assert await store.covering_dm(other.id, b.id, c.id) == []
    claimed = await store.claim(first.id, c.id, 5)
    assert claimed is not None and claimed.status == "claimed" and claimed.moderator_id == c.id
    resolved = await store.resolve_case(first.case_id, c.id, "dismissed", "no", 6)
    assert [r.id for r in resolved] == [first.id, second.id]
    assert all(r.status == "resolved" and r.resolution == "dismissed" for r in resolved)
    assert await store.covering_dm(dm.id, a.id, b.id) == []  # dismissed reports open nothing
    assert await store.resolve_case(first.case_id, c.id, "warned", None, 7) == []
    assert await store.claim(first.id, c.id, 8) is None
    assert await store.track_record(b.id) == (0, 1)
    assert await store.actioned_about(a.id) == 0
    assert [r.id for r in await store.queue(("resolved",), 10)] == [first.id, second.id]
    assert await store.queue(("open",), 10) == []
