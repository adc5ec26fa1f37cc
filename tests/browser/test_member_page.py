"""The member page in headless Chromium against a real chatd node: DMs, rooms, resume, safety.

Frames the server cannot be made to send yet (notice, removed, kicked: moderation comes
later) are injected by a Playwright WebSocket route that sits between the page and the
node and passes everything else through.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Locator,
    Page,
    WebSocket,
    WebSocketRoute,
    expect,
)
from support.server import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WAIT_MS = 15_000
"""Milliseconds any expectation of these tests waits for the page to get there."""

PASSWORD = "correct horse battery staple"
BIRTHDATE = "2000-02-29"
XSS = "<img src=x onerror=alert(1)>"
SEND_BURST = 3
"""Sends a member may make at once in the rate-limit test (limits.send_burst there)."""


@dataclass
class Member:
    """One person: a browser context of their own and the chat page in it."""

    name: str
    context: BrowserContext
    page: Page
    dialogs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # script errors, CSP violations

    def by(self, testid: str) -> Locator:
        return self.page.get_by_test_id(testid)

    @property
    def messages(self) -> Locator:
        return self.by("message-list").get_by_test_id("message")

    @property
    def texts(self) -> Locator:
        return self.by("message-list").get_by_test_id("message-text")

    def conversation(self, title: str) -> Locator:
        return self.by("conversation").filter(has=self.page.get_by_text(title, exact=True))

    def register(self, base_url: str) -> None:
        response = self.page.goto(base_url)
        assert response is not None and response.ok
        self.by("show-register").click()
        self.by("register-username").fill(self.name)
        self.by("register-password").fill(PASSWORD)
        self.by("register-email").fill(f"{self.name}@example.org")
        self.by("register-birthdate").fill(BIRTHDATE)
        self.by("register-submit").click()
        expect(self.by("connection-status")).to_have_attribute("data-state", "online")
        expect(self.by("me-name")).to_have_text(self.name)

    def open_dm(self, username: str) -> None:
        self.by("dm-open-input").fill(username)
        self.by("dm-open-button").click()
        expect(self.by("conversation-title")).to_have_text(username)

    def join_room(self, room: str) -> None:
        self.by("room-join-input").fill(room)
        self.by("room-join-button").click()
        expect(self.by("conversation-title")).to_have_text(room, ignore_case=True)

    def send(self, text: str) -> None:
        box = self.by("send-input")
        box.fill(text)
        box.press("Enter")
        expect(box).to_have_value("")

    def expect_delivered(self, count: int) -> None:
        """Every message of the open conversation acked and delivered back: none pending."""
        expect(self.messages).to_have_count(count)
        expect(self.by("message-list").locator("[data-state=delivered]")).to_have_count(count)


@pytest.fixture
def members(browser: Browser, artifacts_dir: Path) -> Iterator[Callable[[str], Member]]:
    """A factory of members, each in a fresh browser context; contexts closed at teardown."""
    made: list[Member] = []

    def make(name: str) -> Member:
        context = browser.new_context(viewport={"width": 1100, "height": 720})
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        member = Member(name, context, page)
        page.on("dialog", lambda dialog: _refuse_dialog(member, dialog))
        page.on("pageerror", lambda error: member.problems.append(f"script error: {error}"))
        page.on("console", lambda message: _note_csp_violation(member, message))
        made.append(member)
        return member

    expect.set_options(timeout=WAIT_MS)
    yield make
    for member in made:
        if not member.page.is_closed():
            member.page.screenshot(path=str(artifacts_dir / f"last-{member.name}.png"))
        member.context.close()
    problems = [f"{m.name}: {problem}" for m in made for problem in m.problems]
    assert not problems, "the page misbehaved:\n" + "\n".join(problems)


def _note_csp_violation(member: Member, message: ConsoleMessage) -> None:
    if "Content Security Policy" in message.text:
        member.problems.append(f"CSP violation: {message.text}")


def _refuse_dialog(member: Member, dialog: Dialog) -> None:
    member.dialogs.append(dialog.message)
    dialog.dismiss()


def test_page_is_served_with_its_content_security_policy(
    server: ServerProcess, browser: Browser
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        response = page.goto(server.base_url)
        assert response is not None and response.status == 200
        csp = response.header_value("content-security-policy")
        assert csp is not None
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        for asset in ("app.js", "app.css"):
            asset_response = page.request.get(f"{server.base_url}/static/{asset}")
            assert asset_response.ok
            assert asset_response.headers.get("content-security-policy") == csp
        expect(page.get_by_test_id("login-submit")).to_be_visible()
    finally:
        context.close()


def test_dm_messages_go_both_ways_live_and_text_is_never_markup(
    server: ServerProcess, members: Callable[[str], Member], artifacts_dir: Path
) -> None:
    alice, bob = members("alice"), members("bob")
    alice.register(server.base_url)
    bob.register(server.base_url)

    alice.open_dm("bob")
    alice.send("hello bob")
    alice.expect_delivered(1)

    # Bob's sidebar gets the DM live, titled by the other member, with one unread message.
    dm = bob.conversation("alice")
    expect(dm).to_have_count(1)
    expect(dm.get_by_test_id("unread")).to_have_text("1")
    dm.click()
    expect(bob.texts).to_have_text(["hello bob"])
    first = bob.messages.first
    expect(first.get_by_test_id("user-name")).to_have_text("alice")
    expect(first.get_by_test_id("message-time")).not_to_be_empty()
    expect(dm.get_by_test_id("unread")).to_have_count(0)

    bob.send("hi alice")
    expect(alice.texts).to_have_text(["hello bob", "hi alice"])
    expect(alice.messages.nth(1)).to_have_attribute(
        "data-from", _attr(bob.messages.nth(1), "data-from")
    )

    alice.send(XSS)
    for member in (alice, bob):
        expect(member.texts).to_have_text(["hello bob", "hi alice", XSS])
        expect(member.by("message-list").locator("img")).to_have_count(0)
    alice.expect_delivered(3)
    bob.expect_delivered(3)
    # Every message names itself for the moderation actions to come.
    for attribute in ("data-id", "data-conv", "data-from", "data-seq"):
        assert _attr(bob.messages.last, attribute).isdigit()
    assert [_attr(m, "data-seq") for m in bob.messages.all()] == ["1", "2", "3"]
    assert alice.dialogs == [] and bob.dialogs == []

    bob.page.screenshot(path=str(artifacts_dir / "member-page-dm.png"))


def test_room_message_reaches_the_other_member_live(
    server: ServerProcess, members: Callable[[str], Member]
) -> None:
    alice, bob = members("alice"), members("bob")
    alice.register(server.base_url)
    bob.register(server.base_url)

    alice.join_room("Lobby")
    bob.join_room("lobby")  # names compare without case: the same room
    expect(bob.by("conversation-title")).to_have_text("Lobby")
    expect(bob.by("conversation-members")).to_contain_text("2 members")

    bob.send("anyone here?")
    expect(alice.texts).to_have_text(["anyone here?"])
    alice.send("yes, me")
    expect(bob.texts).to_have_text(["anyone here?", "yes, me"])
    expect(bob.messages.first.get_by_test_id("user-name")).to_have_text("bob")
    expect(bob.messages.last.get_by_test_id("user-name")).to_have_text("alice")

    # Leaving takes the room out of the sidebar; the other member stays in it.
    bob.by("room-leave").click()
    expect(bob.by("room-list").get_by_test_id("conversation")).to_have_count(0)
    expect(bob.by("no-conversation")).to_be_visible()
    expect(alice.by("room-list").get_by_test_id("conversation")).to_have_count(1)


def test_page_resumes_after_going_offline_with_every_missed_message_in_order(
    server: ServerProcess, members: Callable[[str], Member], artifacts_dir: Path
) -> None:
    alice, bob = members("alice"), members("bob")
    alice.register(server.base_url)
    bob.register(server.base_url)
    alice.open_dm("bob")
    alice.send("before")
    bob.conversation("alice").click()
    expect(bob.texts).to_have_text(["before"])
    status = bob.by("connection-status")
    expect(status).to_have_attribute("data-connects", "1")

    bob.context.set_offline(True)
    expect(status).not_to_have_attribute("data-state", "online")
    for text in ("one", "two", "three"):
        alice.send(text)
    alice.expect_delivered(4)  # committed, and delivered to every connection still open
    expect(bob.texts).to_have_text(["before"])  # nothing reached the offline page

    bob.context.set_offline(False)
    expect(status).to_have_attribute("data-state", "online")
    expect(status).to_have_attribute("data-connects", "2")  # a new socket, not a reload
    expect(bob.texts).to_have_text(["before", "one", "two", "three"])
    assert [_attr(m, "data-seq") for m in bob.messages.all()] == ["1", "2", "3", "4"]

    # The resumed socket is live again.
    alice.send("after")
    expect(bob.texts).to_have_text(["before", "one", "two", "three", "after"])
    bob.page.screenshot(path=str(artifacts_dir / "member-page-resumed.png"))


def test_page_resumes_after_the_server_side_closes_its_socket(
    server: ServerProcess, members: Callable[[str], Member]
) -> None:
    alice, bob = members("alice"), members("bob")
    routes: list[WebSocketRoute] = []
    refusing: list[bool] = []  # non-empty: every new socket is closed at once, as by a sick node

    def proxy(route: WebSocketRoute) -> None:
        routes.append(route)
        if refusing:
            route.close(code=1013, reason="try again later")
        else:
            route.connect_to_server()

    bob.page.route_web_socket("**/ws", proxy)
    alice.register(server.base_url)
    bob.register(server.base_url)
    alice.open_dm("bob")
    alice.send("before")
    bob.conversation("alice").click()
    expect(bob.texts).to_have_text(["before"])
    status = bob.by("connection-status")

    refusing.append(True)
    routes[-1].close(code=1012, reason="server restarting")
    expect(status).to_have_attribute("data-state", "reconnecting")
    for text in ("one", "two", "three"):
        alice.send(text)
    alice.expect_delivered(4)
    expect(bob.texts).to_have_text(["before"])
    refusing.clear()

    expect(status).to_have_attribute("data-connects", "2")
    expect(bob.texts).to_have_text(["before", "one", "two", "three"])
    expect(bob.by("disconnect-banner")).to_be_hidden()  # 1012 is no reason to bother the member
    assert len(routes) >= 2


def test_gap_seen_live_is_filled_by_sync(
    server: ServerProcess, members: Callable[[str], Member]
) -> None:
    alice, bob = members("alice"), members("bob")
    dropped: list[dict[str, Any]] = []

    def drop_one_live_msg(route: WebSocketRoute) -> None:
        upstream = route.connect_to_server()

        def from_server(message: str | bytes) -> None:
            frame = json.loads(message)
            live = frame.get("t") == "msg" and "rid" not in frame
            if live and frame.get("text") == "lost on the way" and not dropped:
                dropped.append(frame)  # as if the server had never pushed it
                return
            route.send(message)

        upstream.on_message(from_server)

    bob.page.route_web_socket("**/ws", drop_one_live_msg)
    alice.register(server.base_url)
    bob.register(server.base_url)
    alice.open_dm("bob")
    alice.send("first")
    bob.conversation("alice").click()
    expect(bob.texts).to_have_text(["first"])

    alice.send("lost on the way")
    alice.expect_delivered(2)
    alice.send("third")
    # seq 3 arrives live after seq 1: the page sees the gap and syncs seq 2 in.
    expect(bob.texts).to_have_text(["first", "lost on the way", "third"])
    assert len(dropped) == 1
    expect(bob.by("connection-status")).to_have_attribute("data-connects", "1")


def test_rate_limited_sends_are_retried_with_the_same_cmid(
    start_server: Callable[..., ServerProcess], members: Callable[[str], Member]
) -> None:
    node = start_server(limits_send_rate=2, limits_send_burst=SEND_BURST)
    erin = members("erin")
    sent: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []

    def watch(ws: WebSocket) -> None:
        ws.on("framesent", lambda payload: _collect(payload, "send", sent))
        ws.on("framereceived", lambda payload: _collect(payload, "error", refused))

    erin.page.on("websocket", watch)
    erin.register(node.base_url)
    erin.join_room("busy")
    texts = [f"burst {n}" for n in range(SEND_BURST + 2)]
    for text in texts:
        erin.send(text)
    erin.expect_delivered(len(texts))
    expect(erin.texts).to_have_text(texts)  # each exactly once, in the order typed
    assert any(frame["code"] == "rate_limited" for frame in refused)
    cmids = {frame["cmid"] for frame in sent}
    assert len(cmids) == len(texts)  # a retry reuses its cmid
    assert len(sent) > len(texts)
    assert {frame["cmid"] for frame in refused} <= cmids


def test_notice_removed_and_kick_pushed_by_the_server(
    server: ServerProcess, members: Callable[[str], Member]
) -> None:
    carol = members("carol")
    routes: list[WebSocketRoute] = []

    def pass_through(route: WebSocketRoute) -> None:
        route.connect_to_server()
        routes.append(route)

    carol.page.route_web_socket("**/ws", pass_through)
    carol.register(server.base_url)
    carol.join_room("quiet room")
    carol.send("this will be removed")
    carol.send("this stays")
    carol.expect_delivered(2)
    removed = carol.messages.first
    conv, msg_id = int(_attr(removed, "data-conv")), int(_attr(removed, "data-id"))

    def push(frame: dict[str, Any]) -> None:
        routes[-1].send(json.dumps(frame))

    push({"t": "removed", "conv": conv, "id": msg_id, "seq": 1})
    expect(carol.texts).to_have_text(["message removed", "this stays"])

    push({"t": "notice", "text": XSS, "kind": "warning"})
    notice = carol.by("notice-banner")
    expect(notice.get_by_test_id("notice-text")).to_have_text(XSS)
    expect(carol.by("notices").locator("img")).to_have_count(0)
    notice.get_by_test_id("notice-dismiss").click()
    expect(notice).to_have_count(0)

    push({"t": "kicked", "reason": "Take a break <b>now</b>"})
    routes[-1].close(code=4003, reason="kicked")
    expect(carol.by("disconnect-reason")).to_contain_text("Take a break <b>now</b>")
    expect(carol.by("connection-status")).to_have_attribute("data-state", "disconnected")
    assert len(routes) == 1  # a kicked page does not reconnect by itself
    carol.by("reconnect").click()
    expect(carol.by("connection-status")).to_have_attribute("data-connects", "2")
    expect(carol.by("disconnect-banner")).to_be_hidden()
    expect(carol.texts).to_have_text(["message removed", "this stays"])
    assert carol.dialogs == []


def test_login_after_logout_and_bad_password(
    server: ServerProcess, members: Callable[[str], Member]
) -> None:
    dave = members("dave")
    dave.register(server.base_url)
    dave.by("logout").click()
    expect(dave.by("login-form")).to_be_visible()
    expect(dave.by("auth-message")).to_have_text("You have logged out.")
    expect(dave.by("connection-status")).to_have_attribute("data-state", "signed-out")
    token = dave.page.evaluate("sessionStorage.getItem('chatd.token')")
    assert token is None
    assert dave.context.cookies() == [] or all(c["httpOnly"] for c in dave.context.cookies())

    dave.by("login-username").fill("dave")
    dave.by("login-password").fill("not the password")
    dave.by("login-submit").click()
    expect(dave.by("login-error")).to_have_text("Wrong username or password.")

    dave.by("login-password").fill(PASSWORD)
    dave.by("login-submit").click()
    expect(dave.by("connection-status")).to_have_attribute("data-state", "online")
    expect(dave.by("connection-status")).to_have_attribute("data-connects", "1")
    # A reload keeps the tab's session (sessionStorage) and reconnects.
    dave.page.reload()
    expect(dave.by("connection-status")).to_have_attribute("data-state", "online")
    expect(dave.by("me-name")).to_have_text("dave")


def _collect(payload: str | bytes, t: str, into: list[dict[str, Any]]) -> None:
    frame = json.loads(payload)
    if frame.get("t") == t:
        into.append(frame)


def _attr(locator: Locator, name: str) -> str:
    value = locator.get_attribute(name)
    assert value is not None, f"no {name} on {locator}"
    return value
