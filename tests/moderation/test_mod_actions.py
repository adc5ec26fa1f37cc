"""Moderator actions against real connections: kick (4003), ban (4004, tokens revoked,
login refused), unban, timed bans ending by themselves, warn, remove, claim and resolve
(with the reporters' notices), each with its mod.event."""

from __future__ import annotations

import time

import websockets
from modkit import PUSH_TIMEOUT_S, ModKit, next_event

from chatd.client import ChatClient, RequestError


async def test_kick_closes_every_connection_4003_and_the_token_stays(kit: ModKit) -> None:
    target = await kit.member("kicked")
    moderator = await kit.staff("moderator")
    watcher = await kit.connect(moderator)
    await watcher.request({"t": "mod.subscribe"})
    first, second = await kit.connect(target), await kit.connect(target, codec="msgpack")
    answer = await kit.ok(
        "POST", f"/api/mod/users/{target.id}/kick", {"reason": "cool off"}, as_=moderator
    )
    assert answer == {"sessions_closed": 2}
    for client in (first, second):
        assert await client.wait_closed(PUSH_TIMEOUT_S) == 4003
        assert client.frames[-1] == {"t": "kicked", "reason": "cool off"}
    event = await next_event(watcher, "user.kicked", user__id=target.id)
    assert event["by"] == moderator.ref and event["reason"] == "cool off"
    assert event["user"] == target.ref
    # A kick is not a ban: the same token connects again.
    again = await kit.connect(target)
    assert again.ready["user"]["id"] == target.id


async def test_ban_closes_4004_revokes_tokens_refuses_login_and_unban_restores(kit: ModKit) -> None:
    target = await kit.member("banned", via_api=True)
    moderator = await kit.staff("moderator")
    watcher = await kit.connect(moderator)
    await watcher.request({"t": "mod.subscribe"})
    live = await kit.connect(target)
    answer = await kit.ok(
        "POST", f"/api/mod/users/{target.id}/ban", {"reason": "grooming"}, as_=moderator
    )
    assert answer["user"]["status"] == "banned" and answer["user"]["banned_until"] is None
    assert await live.wait_closed(PUSH_TIMEOUT_S) == 4004
    assert live.frames[-1] == {"t": "kicked", "reason": "grooming"}
    event = await next_event(watcher, "user.banned", user__id=target.id)
    assert event["by"] == moderator.ref and event["reason"] == "grooming"

    # The old token is dead everywhere.
    status, body = await kit.call("GET", "/api/me", as_=target)
    assert (status, body["error"]["code"]) == (401, "unauthenticated")
    try:
        await ChatClient.connect(kit.node.ws_url, target.token)
    except RequestError as exc:
        assert exc.code == "unauthenticated"
    except websockets.ConnectionClosed as exc:  # the error frame may race the close
        assert exc.rcvd is not None and exc.rcvd.code == 4001
    else:
        raise AssertionError("a revoked token connected")
    status, body = await kit.login_status(target.username)
    assert (status, body["error"]["code"]) == (403, "banned")

    answer = await kit.ok(
        "POST", f"/api/mod/users/{target.id}/unban", {"reason": "appeal"}, as_=moderator
    )
    assert answer["user"]["status"] == "active"
    token = await kit.login(target.username)
    back = await kit.connect(token)
    assert back.ready["user"]["id"] == target.id
    actions = [
        e["action"]
        for e in (await kit.ok("GET", f"/api/mod/audit?target={target.id}", as_=moderator))[
            "entries"
        ]
    ]
    assert actions == ["user.unban", "user.ban"]


async def test_a_ban_with_days_ends_by_itself(kit: ModKit) -> None:
    target = await kit.member("timed", via_api=True)
    moderator = await kit.staff("moderator")
    before = int(time.time() * 1000)
    answer = await kit.ok(
        "POST",
        f"/api/mod/users/{target.id}/ban",
        {"reason": "a week off", "days": 7},
        as_=moderator,
    )
    until = answer["user"]["banned_until"]
    assert before + 7 * 86_400_000 <= until <= int(time.time() * 1000) + 7 * 86_400_000
    status, body = await kit.login_status(target.username)
    assert (status, body["error"]["code"]) == (403, "banned")
    # A week passes (the test moves banned_until rather than wait).
    kit.sql(
        "UPDATE users SET banned_until = ? WHERE id = ?", (int(time.time() * 1000) - 1, target.id)
    )
    status, body = await kit.login_status(target.username)
    assert status == 200, body
    profile = await kit.ok("GET", f"/api/mod/users/{target.id}", as_=moderator)
    assert profile["user"]["status"] == "active" and profile["bans"] == 1
    for days in (0, 3651, "7", 1.5):
        status, body = await kit.call(
            "POST", f"/api/mod/users/{target.id}/ban", {"days": days}, as_=moderator
        )
        assert (status, body["error"]["code"]) == (422, "invalid"), days


async def test_warn_sends_a_notice(kit: ModKit) -> None:
    target = await kit.member("warned")
    moderator = await kit.staff("moderator")
    client = await kit.connect(target)
    answer = await kit.ok(
        "POST", f"/api/mod/users/{target.id}/warn", {"reason": "mind your language"}, as_=moderator
    )
    assert answer["user"]["id"] == target.id
    assert await client.next_push("notice") == {
        "t": "notice",
        "text": "mind your language",
        "kind": "warning",
    }
    status, body = await kit.call("POST", f"/api/mod/users/{target.id}/warn", {}, as_=moderator)
    assert (status, body["error"]["code"]) == (422, "invalid")


async def test_remove_hides_the_message_from_members_but_not_from_the_case(kit: ModKit) -> None:
    a, b = await kit.member("a"), await kit.member("b")
    moderator = await kit.staff("moderator")
    ca, cb = await kit.connect(a), await kit.connect(b, codec="msgpack")
    room = await kit.room([ca, cb])
    await ca.send(room, "before")
    bad = await ca.send(room, "an offensive message")
    await ca.send(room, "after")
    report = await kit.report(b, category="harassment", msg=bad["id"])
    answer = await kit.ok(
        "POST", f"/api/mod/messages/{bad['id']}/remove", {"reason": "offensive"}, as_=moderator
    )
    assert answer["message"] == {
        "conv": room,
        "id": bad["id"],
        "seq": bad["seq"],
        "from": a.ref,
        "text": None,
        "ts": bad["ts"],
        "cmid": answer["message"]["cmid"],
        "removed": True,
    }
    for client in (ca, cb):
        assert await client.next_push("removed") == {
            "t": "removed",
            "conv": room,
            "id": bad["id"],
            "seq": bad["seq"],
        }
        page, _ = await client.sync(room)
        shown = {m["seq"]: m for m in page}
        assert shown[bad["seq"]]["text"] is None and shown[bad["seq"]]["removed"] is True
        assert shown[bad["seq"] - 1]["text"] == "before" and "removed" not in shown[bad["seq"] - 1]
    status, history = await kit.call("GET", f"/api/conversations/{room}/messages", as_=b)
    assert status == 200 and history["messages"][1]["text"] is None
    # The snapshot froze it when it was reported, and the text stays stored.
    detail = await kit.ok("GET", f"/api/mod/reports/{report}", as_=moderator)
    texts = [m["text"] for m in detail["report"]["snapshot"]["messages"]]
    assert texts == ["before", "an offensive message", "after"]
    assert kit.sql("SELECT text FROM messages WHERE id = ?", (bad["id"],)) == [
        ("an offensive message",)
    ]
    # Removing again changes nothing and pushes nothing.
    again = await kit.ok(
        "POST", f"/api/mod/messages/{bad['id']}/remove", {"reason": "again"}, as_=moderator
    )
    assert again["message"]["removed"] is True
    status, body = await kit.call("POST", "/api/mod/messages/999999999/remove", {}, as_=moderator)
    assert (status, body["error"]["code"]) == (404, "not_found")


async def test_resolving_a_case_resolves_all_its_reports_and_tells_the_reporters(
    kit: ModKit,
) -> None:
    target = await kit.member("tgt")
    reporters = [await kit.member(f"r{n}") for n in range(3)]
    moderator = await kit.staff("moderator")
    watcher = await kit.connect(moderator)
    await watcher.request({"t": "mod.subscribe"})
    ct = await kit.connect(target)
    clients = [await kit.connect(r) for r in reporters]
    room = await kit.room([ct, *clients])
    msg = await ct.send(room, "spam spam spam")
    reports = [await kit.report(r, category="spam", msg=msg["id"]) for r in reporters[:2]]
    reports.append(await kit.report(reporters[2], category="harassment", user=target.id))
    cases = {
        (await kit.ok("GET", f"/api/mod/reports/{r}", as_=moderator))["report"]["case"]
        for r in reports
    }
    assert len(cases) == 1
    (case,) = [
        c
        for c in (await kit.ok("GET", "/api/mod/cases", as_=moderator))["cases"]
        if c["id"] in cases
    ]
    assert case["reporters"] == 3 and {r["id"] for r in case["reports"]} == set(reports)
    assert "3 members reported this case" in case["reasons"]

    claimed = await kit.ok("POST", f"/api/mod/reports/{reports[0]}/claim", as_=moderator)
    assert (
        claimed["report"]["status"] == "claimed" and claimed["report"]["moderator"] == moderator.ref
    )
    event = await next_event(watcher, "report.updated", report__id=reports[0])
    assert event["report"]["status"] == "claimed"

    answer = await kit.ok(
        "POST",
        f"/api/mod/reports/{reports[1]}/resolve",
        {"resolution": "kicked", "note": "spamming the room"},
        as_=moderator,
    )
    assert answer["report"]["status"] == "resolved" and answer["report"]["resolution"] == "kicked"
    assert await ct.wait_closed(PUSH_TIMEOUT_S) == 4003
    assert ct.frames[-1] == {"t": "kicked", "reason": "spamming the room"}
    for client in clients:
        notice = await client.next_push("notice")
        assert notice == {
            "t": "notice",
            "text": "thank you, we acted on your report",
            "kind": "report",
        }
    for report in reports:
        event = await next_event(watcher, "report.updated", report__id=report)
        assert event["report"]["status"] == "resolved" and event["report"]["resolution"] == "kicked"
    listed = {
        r["id"]: r
        for r in (await kit.ok("GET", "/api/mod/reports?status=resolved&limit=500", as_=moderator))[
            "reports"
        ]
    }
    assert all(
        listed[r]["resolution"] == "kicked" and listed[r]["moderator"] == moderator.ref
        for r in reports
    )
    status, body = await kit.call(
        "POST", f"/api/mod/reports/{reports[0]}/resolve", {"resolution": "dismissed"}, as_=moderator
    )
    assert (status, body["error"]["code"]) == (422, "invalid")
    # The kick came through the case: the audit names the report.
    entries = (await kit.ok("GET", f"/api/mod/audit?target={target.id}", as_=moderator))["entries"]
    assert [(e["action"], e["report"]) for e in entries[:2]] == [
        ("user.kick", reports[1]),
        ("report.resolve", reports[1]),
    ]

    # A later report on the same target joins the case; dismissing it says no breach.
    later = await kit.report(reporters[0], category="other", user=target.id)
    assert (await kit.ok("GET", f"/api/mod/reports/{later}", as_=moderator))["report"][
        "case"
    ] in cases
    await kit.ok(
        "POST", f"/api/mod/reports/{later}/resolve", {"resolution": "dismissed"}, as_=moderator
    )
    notice = await clients[0].next_push("notice")
    assert notice == {"t": "notice", "text": "we looked and found no breach", "kind": "report"}


async def test_resolving_as_banned_bans_the_target(kit: ModKit) -> None:
    target = await kit.member("tgt")
    reporter = await kit.member("rep")
    moderator = await kit.staff("moderator")
    ct = await kit.connect(target)
    report = await kit.report(reporter, category="threat", user=target.id, note="threatened me")
    await kit.ok(
        "POST",
        f"/api/mod/reports/{report}/resolve",
        {"resolution": "banned", "note": "threats", "days": 30},
        as_=moderator,
    )
    assert await ct.wait_closed(PUSH_TIMEOUT_S) == 4004
    profile = await kit.ok("GET", f"/api/mod/users/{target.id}", as_=moderator)
    assert (
        profile["user"]["status"] == "banned"
        and profile["user"]["banned_until"] > time.time() * 1000
    )
    for body in ({"resolution": "nope"}, {}, {"resolution": "banned", "days": 0}):
        status, answer = await kit.call(
            "POST", f"/api/mod/reports/{report}/resolve", body, as_=moderator
        )
        assert (status, answer["error"]["code"]) == (422, "invalid"), body
