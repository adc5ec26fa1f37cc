"""Accounts as moderators see them: the profile (registrations, logins, reports about and
by, linked accounts), the ban-evasion alert at registration, registrations by day and
age, and the priority order of issue 4's five cases on a live node."""

from __future__ import annotations

import datetime
import time
import uuid

from modkit import ModKit, birthdate_for, next_event

HOUR_MS = 3600 * 1000
YEAR_MS = 365 * 24 * HOUR_MS


async def test_profile_shows_sightings_reports_and_linked_accounts(kit: ModKit) -> None:
    device = f"dev-{uuid.uuid4().hex}"
    tag = uuid.uuid4().hex[:8]
    # Made in the database, with a registration sighting each (modkit), except the first.
    user = await kit.member("prof", via_api=True, device=device, email=f"john.doe+{tag}@gmail.com")
    same_device = await kit.member("samedev", device=device)
    same_mailbox = await kit.member("samemail", email=f"JohnDoe+{tag}@googlemail.com")
    both = await kit.member("both", device=device, email="j.o.h.n.doe@gmail.com")
    stranger = await kit.member("stranger")
    await kit.login(user.username, device="another-device")
    moderator = await kit.staff("moderator")
    await kit.report(user, category="spam", user=stranger.id)
    await kit.report(stranger, category="harassment", user=user.id)

    profile = await kit.ok("GET", f"/api/mod/users/{user.id}", as_=moderator)
    assert profile["user"]["id"] == user.id and profile["user"]["status"] == "active"
    (registration,) = profile["registrations"]
    assert registration["device"] == device and registration["address"] == "127.0.0.1"
    assert registration["user_agent"] and isinstance(registration["ts"], int)
    assert [login["device"] for login in profile["logins"]] == ["another-device"]
    assert [r["reporter"]["id"] for r in profile["reports"]["about"]] == [stranger.id]
    assert [r["target"]["id"] for r in profile["reports"]["by"]] == [stranger.id]
    linked = {link["user"]["id"]: link for link in profile["linked"]}
    # Gmail ignores dots and +tags, and googlemail.com is gmail.com. Other links than these
    # (earlier tests' accounts with the same mailbox) may be there too.
    assert linked[same_device.id]["reasons"] == ["device"]
    assert linked[same_mailbox.id]["reasons"] == ["email"]
    assert sorted(linked[both.id]["reasons"]) == ["device", "email"]
    assert stranger.id not in linked
    assert (
        linked[both.id]["score"]
        > linked[same_device.id]["score"]
        > linked[same_mailbox.id]["score"]
    )
    assert all(0 <= link["score"] <= 1 for link in linked.values())
    assert linked[same_device.id]["user"] == {
        "id": same_device.id,
        "username": same_device.username,
        "status": "active",
    }
    status, body = await kit.call("GET", "/api/mod/users/999999999", as_=moderator)
    assert (status, body["error"]["code"]) == (404, "not_found")


async def test_a_new_account_linked_to_a_banned_one_raises_an_alert(kit: ModKit) -> None:
    device = f"dev-{uuid.uuid4().hex}"
    mailbox = uuid.uuid4().hex[:10]
    offender = await kit.member(
        "offender", via_api=True, device=device, email=f"{mailbox}@gmail.com"
    )
    moderator = await kit.staff("moderator")
    console = await kit.connect(moderator)
    await console.request({"t": "mod.subscribe"})
    await kit.ok("POST", f"/api/mod/users/{offender.id}/ban", {"reason": "grooming"}, as_=moderator)

    # Back ten minutes later: new address would not matter, the device does.
    started = time.perf_counter()
    again = await kit.member("newname", via_api=True, device=device)
    event = await next_event(console, "alert", alert__user__id=again.id)
    assert time.perf_counter() - started < 5
    alert = event["alert"]
    assert alert["kind"] == "ban_evasion" and alert["user"] == again.ref
    assert [(a["id"], a["username"], a["reasons"]) for a in alert["linked"]] == [
        (offender.id, offender.username, ["device"])
    ]
    # Policy: the registration went through (registration_blocked is not used).
    assert (await kit.ok("GET", "/api/me", as_=again))["user"]["id"] == again.id
    # And by mailbox, with a fresh device.
    third = await kit.member(
        "third", via_api=True, email=f"{mailbox[:3]}.{mailbox[3:]}+x@googlemail.com"
    )
    event = await next_event(console, "alert", alert__user__id=third.id)
    assert [a["reasons"] for a in event["alert"]["linked"]] == [["email"]]
    alerts = (await kit.ok("GET", "/api/mod/alerts", as_=moderator))["alerts"]
    assert [a["user"]["id"] for a in alerts[:2]] == [third.id, again.id]
    # An account linked to nobody banned raises nothing.
    quiet = await kit.member("quiet", via_api=True)
    alerts = (await kit.ok("GET", "/api/mod/alerts", as_=moderator))["alerts"]
    assert quiet.id not in {a["user"]["id"] for a in alerts}


async def test_registrations_by_day_and_age(fresh_kit) -> None:  # type: ignore[no-untyped-def]
    kit: ModKit = await fresh_kit()
    today = datetime.datetime.now(datetime.UTC).date()
    await kit.member("reg", via_api=True, birthdate=birthdate_for(15, today=today))
    for age in (15, 15, 16, 42):
        await kit.member("reg", birthdate=birthdate_for(age, today=today))
    # Two days ago.
    await kit.member("old", age=30, created=int(time.time() * 1000) - 2 * 24 * HOUR_MS)
    moderator = await kit.staff("moderator")
    days = (await kit.ok("GET", "/api/mod/stats/registrations", as_=moderator))["days"]
    assert len(days) == 30 and days[-1]["date"] == today.isoformat()
    assert [d["date"] for d in days] == [
        (today - datetime.timedelta(days=29 - n)).isoformat() for n in range(30)
    ]
    # Today: the five, and the moderator the CLI made.
    assert days[-1]["by_age"] == {"15": 3, "16": 1, "35": 1, "42": 1} and days[-1]["total"] == 6
    assert days[-3]["by_age"] == {"30": 1} and days[-3]["total"] == 1
    assert sum(d["total"] for d in days) == 7
    short = (await kit.ok("GET", "/api/mod/stats/registrations?days=2", as_=moderator))["days"]
    assert [d["total"] for d in short] == [0, 6]
    for bad in (0, 367, "x"):
        status, body = await kit.call(
            "GET", f"/api/mod/stats/registrations?days={bad}", as_=moderator
        )
        assert (status, body["error"]["code"]) == (422, "invalid")


async def test_the_five_cases_of_issue_4_come_in_order(kit: ModKit) -> None:
    """(1) minor_sexual, reporter 15, target 41 with two earlier actioned reports;
    (2) threat between adults; (3) harassment reported by an outreach volunteer;
    (4) harassment from an ordinary adult; (5) spam from an account made an hour ago."""
    now = int(time.time() * 1000)
    moderator = await kit.staff("moderator")
    established = now - 3 * YEAR_MS

    groomer = await kit.member("groomer", age=41, created=established)
    for n in range(2):  # two earlier reports about the groomer, acted on
        witness = await kit.member(f"wit{n}")
        earlier = await kit.report(witness, category="sexual", user=groomer.id)
        await kit.ok(
            "POST",
            f"/api/mod/reports/{earlier}/resolve",
            {"resolution": "warned", "note": "stop"},
            as_=moderator,
        )
    teen = await kit.member("teen", age=15)
    case1 = await kit.report(teen, category="minor_sexual", user=groomer.id)

    threatened, threatener = (
        await kit.member("thr1", age=30),
        await kit.member("thr2", age=35, created=established),
    )
    case2 = await kit.report(threatened, category="threat", user=threatener.id)

    # The volunteer's organisation is set with the CLI, as an admin does it.
    volunteer = await kit.staff("member", fresh=True, tag="vol", org="Outreach", age=45)
    harasser1 = await kit.member("har1", age=28, created=established)
    case3 = await kit.report(volunteer, category="harassment", user=harasser1.id)

    adult, harasser2 = (
        await kit.member("adult", age=33),
        await kit.member("har2", age=28, created=established),
    )
    case4 = await kit.report(adult, category="harassment", user=harasser2.id)

    spammer = await kit.member("spammer", age=22, created=now - HOUR_MS)
    spammed = await kit.member("spammed", age=40)
    case5 = await kit.report(spammed, category="spam", user=spammer.id)

    mine = [case1, case2, case3, case4, case5]
    queue = [
        r
        for r in (await kit.ok("GET", "/api/mod/reports?limit=500", as_=moderator))["reports"]
        if r["id"] in mine
    ]
    assert [r["id"] for r in queue] == mine, [(r["id"], r["priority"], r["reasons"]) for r in queue]
    top = queue[0]
    assert "member under 18 involved: reporter is 15" in top["reasons"]
    assert "reported account: 2 earlier reports acted on" in top["reasons"]
    assert queue[2]["reporter"]["org"] == "Outreach"
    assert "reporter from a trusted organisation (Outreach)" in queue[2]["reasons"]
    assert "reported account made 1 hour ago" in queue[4]["reasons"]
    # The cases list in the same order.
    cases = [
        c
        for c in (await kit.ok("GET", "/api/mod/cases?limit=500", as_=moderator))["cases"]
        if c["reports"][0]["id"] in mine
    ]
    assert [c["reports"][0]["id"] for c in cases] == mine
