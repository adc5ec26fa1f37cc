"""The privacy gate: a DM opens to moderators only through a report that covers it and
is not dismissed, and only up to moderation.gate_days after that report; rooms are open.
Every read, refused read and snapshot read is in the audit log.

Messages "sent after the window" are made by appending, through persistence's group
commit writer on the node's own database file, a message whose ts lies gate_days + 1
days in the future (the setting cannot go below one day, and a test cannot wait a day).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from modkit import Account, ModKit

from persistence.database import Database
from persistence.writer import GroupCommitWriter

DAY_MS = 24 * 3600 * 1000
# The node's moderation.gate_days (the default).
GATE_DAYS = 7


async def _append_later(kit: ModKit, sender: Account, conv: int, text: str, ts: int) -> int:
    """Appends a message with the given ts straight into the node's database; its id."""
    db = await Database.connect(kit.db_url)
    writer = GroupCommitWriter(db)
    await writer.start()
    try:
        result = await writer.append(
            sender_id=sender.id,
            sender_username=sender.username,
            conv_id=conv,
            cmid=uuid.uuid4().hex,
            text=text,
            ts=ts,
        )
        return result.message.id
    finally:
        await writer.stop()
        await db.close()


async def _audit(kit: ModKit, who: Account, **query: int) -> list[dict[str, Any]]:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    entries = (await kit.ok("GET", f"/api/mod/audit?{params}", as_=who))["entries"]
    return entries  # type: ignore[no-any-return]


def _read(kit: ModKit, conv: int, who: Account, after: int = 0) -> Any:
    return kit.call("GET", f"/api/mod/conversations/{conv}/messages?after={after}", as_=who)


async def test_the_gate_opens_with_a_report_and_shuts_when_it_is_dismissed(kit: ModKit) -> None:
    teen, adult, other = (
        await kit.member("teen", age=15),
        await kit.member("adult", age=41),
        await kit.member("oth"),
    )
    moderator = await kit.staff("moderator")
    ct, ca = await kit.connect(teen), await kit.connect(adult)
    dm = await kit.dm(ca, teen)
    first = await ca.send(dm, "hi, how old are you?")
    await ct.send(dm, "15")
    # Without a report: shut, and the refusal is audited.
    status, body = await _read(kit, dm, moderator)
    assert (status, body["error"]["code"]) == (403, "no_report")
    # A report about another DM of the adult does not open this one.
    co = await kit.connect(other)
    elsewhere = await kit.dm(co, adult)
    await ca.send(elsewhere, "hello other")
    await kit.report(other, category="harassment", conv=elsewhere)
    status, body = await _read(kit, dm, moderator)
    assert (status, body["error"]["code"]) == (403, "no_report")

    # A report naming only the adult, by the teen, covers the DM between them.
    report = await kit.report(teen, category="minor_sexual", user=adult.id, note="he asks my age")
    status, body = await _read(kit, dm, moderator)
    assert status == 200, body
    assert [m["text"] for m in body["messages"]] == ["hi, how old are you?", "15"]
    assert body["messages"][0]["id"] == first["id"] and body["more"] is False

    # Dismissed: shut again.
    await kit.ok(
        "POST", f"/api/mod/reports/{report}/resolve", {"resolution": "dismissed"}, as_=moderator
    )
    status, body = await _read(kit, dm, moderator)
    assert (status, body["error"]["code"]) == (403, "no_report")
    status, body = await kit.call(
        "POST", f"/api/mod/messages/{first['id']}/remove", {"reason": "x"}, as_=moderator
    )
    assert (status, body["error"]["code"]) == (403, "no_report")

    # A report of one of its messages opens it again (a report that was acted on keeps it open).
    again = await kit.report(teen, category="minor_sexual", msg=first["id"])
    status, body = await _read(kit, dm, moderator)
    assert status == 200 and len(body["messages"]) == 2
    await kit.ok(
        "POST", f"/api/mod/reports/{again}/resolve", {"resolution": "police"}, as_=moderator
    )
    status, body = await _read(kit, dm, moderator)
    assert status == 200 and len(body["messages"]) == 2

    entries = await _audit(kit, moderator, actor=moderator.id)
    reads = [e for e in entries if e["conv"] == dm and e["action"].startswith("conv.read")]
    assert [e["action"] for e in reversed(reads)] == [
        "conv.read.refused",
        "conv.read.refused",
        "conv.read",
        "conv.read.refused",
        "conv.read",
        "conv.read",
    ]
    granted = [e for e in reads if e["action"] == "conv.read"]
    assert granted[-1]["report"] == report and granted[0]["report"] == again
    assert all(e["actor"] == moderator.ref for e in reads)
    refused_removal = [e for e in entries if e["action"] == "message.remove.refused"]
    assert refused_removal and refused_removal[0]["msg"] == first["id"]


async def test_messages_after_the_gate_window_stay_shut(kit: ModKit) -> None:
    teen, adult = await kit.member("teen", age=16), await kit.member("adult", age=44)
    moderator = await kit.staff("moderator")
    ca = await kit.connect(adult)
    dm = await kit.dm(ca, teen)
    before = await ca.send(dm, "before the report")
    await kit.report(teen, category="sexual", msg=before["id"])
    within = await _append_later(
        kit, adult, dm, "a week later", int(time.time() * 1000) + (GATE_DAYS - 1) * DAY_MS
    )
    late_ts = int(time.time() * 1000) + (GATE_DAYS + 1) * DAY_MS
    late = await _append_later(kit, adult, dm, "long after the report", late_ts)

    status, body = await _read(kit, dm, moderator)
    assert status == 200, body
    assert [m["id"] for m in body["messages"]] == [before["id"], within]
    assert body["more"] is False
    # Asking only for what lies beyond the window: 403, audited.
    status, body = await _read(kit, dm, moderator, after=2)
    assert (status, body["error"]["code"]) == (403, "no_report")
    status, body = await kit.call(
        "POST", f"/api/mod/messages/{late}/remove", {"reason": "x"}, as_=moderator
    )
    assert (status, body["error"]["code"]) == (403, "no_report")
    # Within the window it may be removed.
    status, body = await kit.call(
        "POST", f"/api/mod/messages/{within}/remove", {"reason": "x"}, as_=moderator
    )
    assert status == 200 and body["message"]["removed"] is True and body["message"]["text"] is None
    entries = await _audit(kit, moderator, actor=moderator.id)
    refused = next(e for e in entries if e["action"] == "conv.read.refused" and e["conv"] == dm)
    assert refused["reason"] == "messages sent after the gate window"
    assert refused["detail"]["until"] < late_ts


async def test_rooms_are_open_to_moderators_and_reads_are_audited(kit: ModKit) -> None:
    a, b = await kit.member("a"), await kit.member("b")
    moderator = await kit.staff("moderator")
    ca, cb = await kit.connect(a), await kit.connect(b)
    room = await kit.room([ca, cb])
    await ca.send(room, "hello room")
    status, body = await _read(kit, room, moderator)
    assert status == 200 and [m["text"] for m in body["messages"]] == ["hello room"]
    (entry,) = [e for e in await _audit(kit, moderator, actor=moderator.id) if e["conv"] == room]
    assert entry["action"] == "conv.read" and entry["report"] is None
    assert entry["detail"]["kind"] == "room"
    status, body = await _read(kit, 999_999_999, moderator)
    assert (status, body["error"]["code"]) == (404, "not_found")


async def test_snapshot_reads_are_audited_and_the_audit_is_per_moderator(kit: ModKit) -> None:
    a, b = await kit.member("a"), await kit.member("b")
    moderator = await kit.staff("moderator")
    admin = await kit.staff("admin")
    ca = await kit.connect(a)
    dm = await kit.dm(ca, b)
    msg = await ca.send(dm, "reported text")
    report = await kit.report(b, category="harassment", msg=msg["id"])
    detail = await kit.ok("GET", f"/api/mod/reports/{report}", as_=moderator)
    assert [m["text"] for m in detail["report"]["snapshot"]["messages"]] == ["reported text"]
    assert detail["report"]["snapshot"]["conv"] == dm

    mine = await _audit(kit, moderator, target=a.id)
    assert mine[0]["action"] == "report.read" and mine[0]["report"] == report
    assert mine[0]["actor"] == moderator.ref and mine[0]["target"] == a.ref
    assert mine[0]["detail"] == {"messages": 1}
    # Moderators see their own entries only; admins everyone's.
    status, body = await kit.call("GET", f"/api/mod/audit?actor={admin.id}", as_=moderator)
    assert (status, body["error"]["code"]) == (403, "forbidden")
    everyone = await _audit(kit, admin, target=a.id)
    assert any(e["actor"] == moderator.ref for e in everyone)
    await kit.ok("GET", f"/api/mod/reports/{report}", as_=admin)
    assert {e["actor"]["id"] for e in await _audit(kit, moderator, limit=1000)} == {moderator.id}
    assert {e["actor"]["id"] for e in await _audit(kit, admin, target=a.id)} == {
        moderator.id,
        admin.id,
    }
    status, body = await kit.call("GET", "/api/mod/audit?limit=1001", as_=admin)
    assert (status, body["error"]["code"]) == (422, "invalid")


async def test_the_audit_log_is_append_only(kit: ModKit) -> None:
    moderator = await kit.staff("moderator")
    await kit.ok("GET", "/api/mod/reports", as_=moderator)
    a = await kit.member("a")
    await kit.ok("GET", f"/api/mod/users/{a.id}", as_=moderator)
    for statement in ("UPDATE audit_log SET reason = 'x'", "DELETE FROM audit_log"):
        try:
            kit.sql(statement)
        except Exception as exc:
            assert "append-only" in str(exc)
        else:
            raise AssertionError(f"{statement} went through")
    assert kit.sql("SELECT count(*) FROM audit_log")[0][0] > 0
