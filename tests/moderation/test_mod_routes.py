"""Every /api/mod/* route from one table: who reaches it (no token 401, members 403),
whom it may act on (nobody on admins, only admins on moderators), and that no route
hands out the text of a DM that no report covers."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from modkit import Account, ModKit, next_event
from starlette.routing import Route

from chatd import http_mod


@dataclass(frozen=True)
class ModRoute:
    method: str
    path: str  # with {report}, {conv}, {msg}, {user} to fill in
    body: dict[str, Any] | None = None
    # What it acts on: None (a read), "user" (the account {user}), "msg" (the sender of
    # {msg}), "report" (the target of {report}'s case).
    acts_on: str | None = None


# Every /api/mod/* route; test_the_table_names_every_mod_route keeps it complete.
MOD_ROUTES = [
    ModRoute("GET", "/api/mod/reports"),
    ModRoute("GET", "/api/mod/reports?status=all"),
    ModRoute("GET", "/api/mod/reports/{report}"),
    ModRoute("POST", "/api/mod/reports/{report}/claim", {}),
    ModRoute(
        "POST", "/api/mod/reports/{report}/resolve", {"resolution": "kicked", "note": "x"}, "report"
    ),
    ModRoute("GET", "/api/mod/cases"),
    ModRoute("GET", "/api/mod/conversations/{conv}/messages"),
    ModRoute("POST", "/api/mod/messages/{msg}/remove", {"reason": "x"}, "msg"),
    ModRoute("GET", "/api/mod/users/{user}"),
    ModRoute("POST", "/api/mod/users/{user}/warn", {"reason": "x"}, "user"),
    ModRoute("POST", "/api/mod/users/{user}/kick", {"reason": "x"}, "user"),
    ModRoute("POST", "/api/mod/users/{user}/ban", {"reason": "x", "days": 1}, "user"),
    ModRoute("POST", "/api/mod/users/{user}/unban", {"reason": "x"}, "user"),
    ModRoute("GET", "/api/mod/audit"),
    ModRoute("GET", "/api/mod/alerts"),
    ModRoute("GET", "/api/mod/stats/registrations"),
]
ACTING = [r for r in MOD_ROUTES if r.acts_on]


def _id(route: ModRoute) -> str:
    return f"{route.method} {route.path}"


def test_the_table_names_every_mod_route() -> None:
    served = set()
    for r in http_mod.routes():
        assert isinstance(r, Route)
        if r.path.startswith("/api/mod/"):
            served |= {(method, r.path) for method in (r.methods or ()) if method != "HEAD"}
    tabled = {(r.method, r.path.split("?")[0]) for r in MOD_ROUTES}
    tabled = {
        (m, p.replace("{report}", "{id}").replace("{msg}", "{id}").replace("{user}", "{id}"))
        for m, p in tabled
    }
    assert tabled == served


@dataclass
class World:
    """A member, a moderator and an admin, another of each staff role to act on, and one
    report, conversation and message per target."""

    member: Account
    moderator: Account
    admin: Account
    other_moderator: Account
    other_admin: Account
    targets: dict[str, dict[str, int]]  # role -> {user, conv, msg, report}


async def _world(kit: ModKit) -> World:
    member = await kit.member("walker")
    moderator = await kit.staff("moderator")
    admin = await kit.staff("admin")
    other_moderator = kit.promote(await kit.member("peer"), "moderator")
    other_admin = kit.promote(await kit.member("boss"), "admin")
    reporter = await kit.member("rep")
    reporter_client = await kit.connect(reporter)
    targets = {}
    for role, account in (
        ("member", member),
        ("moderator", other_moderator),
        ("admin", other_admin),
    ):
        client = await kit.connect(account)
        room = await kit.room([client, reporter_client])
        ack = await client.send(room, f"a room message by a {role}")
        report = await kit.report(reporter, category="harassment", msg=ack["id"])
        targets[role] = {"user": account.id, "conv": room, "msg": ack["id"], "report": report}
    return World(member, moderator, admin, other_moderator, other_admin, targets)


def _path(route: ModRoute, ids: dict[str, int]) -> str:
    return route.path.format(**ids)


async def test_no_token_gets_401_on_every_route(kit: ModKit) -> None:
    world = await _world(kit)
    for route in MOD_ROUTES:
        status, body = await kit.call(
            route.method, _path(route, world.targets["member"]), route.body, as_=None
        )
        assert (status, body["error"]["code"]) == (401, "unauthenticated"), _id(route)
        bad = Account(0, "nobody", "not-a-token")
        status, body = await kit.call(
            route.method, _path(route, world.targets["member"]), route.body, as_=bad
        )
        assert (status, body["error"]["code"]) == (401, "unauthenticated"), _id(route)


async def test_a_member_gets_403_on_every_route_and_changes_nothing(kit: ModKit) -> None:
    world = await _world(kit)
    ids = world.targets["member"]
    for route in MOD_ROUTES:
        status, body = await kit.call(route.method, _path(route, ids), route.body, as_=world.member)
        assert (status, body["error"]["code"]) == (403, "forbidden"), _id(route)
    # Nothing was claimed, resolved, removed or banned.
    report = await kit.ok("GET", f"/api/mod/reports/{ids['report']}", as_=world.moderator)
    assert report["report"]["status"] == "open"
    assert report["report"]["snapshot"]["messages"][-1].get("removed") is None
    profile = await kit.ok("GET", f"/api/mod/users/{world.member.id}", as_=world.moderator)
    assert profile["user"]["status"] == "active"


@pytest.mark.parametrize("route", ACTING, ids=_id)
async def test_nobody_acts_on_an_admin(kit: ModKit, route: ModRoute) -> None:
    world = await _world(kit)
    ids = world.targets["admin"]
    for actor in (world.moderator, world.admin):
        status, body = await kit.call(route.method, _path(route, ids), route.body, as_=actor)
        assert (status, body["error"]["code"]) == (403, "forbidden"), (actor.role, body)
    # The refusals are audited, and the admin is untouched.
    entries = (
        await kit.ok("GET", f"/api/mod/audit?actor={world.moderator.id}", as_=world.moderator)
    )["entries"]
    assert entries and entries[0]["action"].endswith(".refused")
    me = await kit.ok("GET", "/api/me", as_=world.other_admin)
    assert me["user"]["role"] == "admin"
    report = await kit.ok("GET", f"/api/mod/reports/{ids['report']}", as_=world.admin)
    assert report["report"]["status"] == "open"


@pytest.mark.parametrize("route", ACTING, ids=_id)
async def test_only_admins_act_on_moderators(kit: ModKit, route: ModRoute) -> None:
    world = await _world(kit)
    ids = world.targets["moderator"]
    status, body = await kit.call(route.method, _path(route, ids), route.body, as_=world.moderator)
    assert (status, body["error"]["code"]) == (403, "forbidden"), body
    status, body = await kit.call(route.method, _path(route, ids), route.body, as_=world.admin)
    assert status == 200, body


@pytest.mark.parametrize("route", ACTING, ids=_id)
async def test_moderators_act_on_members(kit: ModKit, route: ModRoute) -> None:
    world = await _world(kit)
    status, body = await kit.call(
        route.method, _path(route, world.targets["member"]), route.body, as_=world.moderator
    )
    assert status == 200, body


async def test_no_mod_route_shows_dm_text_that_no_report_covers(kit: ModKit) -> None:
    """Walks every route as a moderator and as an admin, with every id there is, and
    scans every answer (and the live event stream) for the texts of unreported DMs."""
    secret = f"private-{uuid.uuid4().hex}"
    x, y, z, w = [await kit.member(tag) for tag in ("x", "y", "z", "w")]
    cx, cy, cz, cw = [await kit.connect(account) for account in (x, y, z, w)]
    moderator = await kit.staff("moderator")
    admin = await kit.staff("admin")
    watcher = await kit.connect(moderator)
    await watcher.request({"t": "mod.subscribe"})

    # x and y talk privately, and nobody reports it.
    private = await kit.dm(cx, y)
    private_ids = []
    for n in range(3):
        private_ids.append((await cx.send(private, f"{secret} {n} from x"))["id"])
        private_ids.append((await cy.send(private, f"{secret} {n} from y"))["id"])
    # z reports x (only the user): that covers the DMs between z and x, not x's with y.
    zx = await kit.dm(cz, x)
    await cx.send(zx, "covered: x writes to z")
    by_user = await kit.report(z, category="harassment", user=x.id, note="x bothers me")
    # w reports a message of x in their DM; a room report too.
    wx = await kit.dm(cw, x)
    reported_msg = (await cx.send(wx, "covered: x writes to w"))["id"]
    by_msg = await kit.report(w, category="sexual", msg=reported_msg)
    room = await kit.room([cx, cz])
    room_msg = (await cx.send(room, "a room message"))["id"]
    by_room = await kit.report(z, category="spam", conv=room)
    await next_event(watcher, "report.created", report__id=by_room)

    answers: list[tuple[str, int, Any]] = []

    async def walk(who: Account) -> None:
        ids = {"report": by_user, "conv": private, "msg": private_ids[0], "user": x.id}
        calls: list[tuple[str, str, dict[str, Any] | None]] = []
        for route in MOD_ROUTES:
            if route.acts_on is None:
                calls.append((route.method, _path(route, ids), None))
        for report in (by_user, by_msg, by_room):
            calls.append(("GET", f"/api/mod/reports/{report}", None))
        for conv in (private, zx, wx, room):
            calls.append(("GET", f"/api/mod/conversations/{conv}/messages?limit=500", None))
        for user in (x, y, z, w):
            calls.append(("GET", f"/api/mod/users/{user.id}", None))
            calls.append(("GET", f"/api/mod/audit?target={user.id}", None))
        for status in ("open", "claimed", "resolved", "all"):
            calls.append(("GET", f"/api/mod/reports?status={status}&limit=500", None))
            if status in ("open", "all"):
                calls.append(("GET", f"/api/mod/cases?status={status}&limit=500", None))
        for message in private_ids[:2]:
            calls.append(("POST", f"/api/mod/messages/{message}/remove", {"reason": "try"}))
        calls.append(("POST", f"/api/mod/users/{y.id}/warn", {"reason": "a warning"}))
        calls.append(("POST", f"/api/mod/reports/{by_msg}/claim", {}))
        calls.append(("POST", f"/api/mod/messages/{room_msg}/remove", {"reason": "spam"}))
        for method, path, body in calls:
            status, answer = await kit.call(method, path, body, as_=who)
            answers.append((f"{who.role} {method} {path}", status, answer))

    await walk(moderator)
    await walk(admin)
    await kit.call(
        "POST",
        f"/api/mod/reports/{by_user}/resolve",
        {"resolution": "kicked", "note": "bye"},
        as_=admin,
    )

    by_path = {name: (status, answer) for name, status, answer in answers}
    # The gate kept the private DM shut, and said so.
    for who in ("moderator", "admin"):
        status, answer = by_path[f"{who} GET /api/mod/conversations/{private}/messages?limit=500"]
        assert (status, answer["error"]["code"]) == (403, "no_report")
        status, answer = by_path[f"{who} POST /api/mod/messages/{private_ids[0]}/remove"]
        assert (status, answer["error"]["code"]) == (403, "no_report")
        status, answer = by_path[f"{who} GET /api/mod/conversations/{zx}/messages?limit=500"]
        assert status == 200 and [m["text"] for m in answer["messages"]] == [
            "covered: x writes to z"
        ]
        status, answer = by_path[f"{who} GET /api/mod/conversations/{wx}/messages?limit=500"]
        assert status == 200
    status, answer = by_path[f"moderator GET /api/mod/reports/{by_user}"]
    assert [m["text"] for m in answer["report"]["snapshot"]["messages"]] == [
        "covered: x writes to z"
    ]
    assert len(answers) > 60
    leaks = [
        name for name, _, answer in answers if secret in json.dumps(answer, ensure_ascii=False)
    ]
    assert not leaks, leaks
    seen = json.dumps(watcher.frames, ensure_ascii=False)
    assert "report.updated" in seen and secret not in seen
