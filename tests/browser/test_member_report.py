"""Reporting from the member page in headless Chromium against a real chatd node.

A member reports a message or another member in two clicks ("Report", then the category),
may block in the same step, and is thanked at once; the report is then checked where the
moderators read it, GET /api/mod/reports.
"""

from __future__ import annotations

import json
import subprocess
import sys
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
from support.aio import run_coroutine
from support.server import ServerProcess

from chatd.client import api

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WAIT_MS = 15_000
"""Milliseconds any expectation of these tests waits for the page to get there."""

CLI_TIMEOUT_S = 60.0
"""Seconds `chatd users create` gets to finish."""

PASSWORD = "correct horse battery staple"
BIRTHDATE = "2000-02-29"
MOD_NAME = "mod"
MOD_PASSWORD = "password123"
THANKS = "Thank you — a moderator will look at it."
GROOMING = "Sexual contact with a minor / grooming"
XSS = "<img src=x onerror=alert(1)>"


@dataclass
class Member:
    """One person: a browser context of their own, the chat page in it, and its frames."""

    name: str
    context: BrowserContext
    page: Page
    sent: list[dict[str, Any]] = field(default_factory=list)  # frames the page sent
    received: list[dict[str, Any]] = field(default_factory=list)  # frames it received
    dialogs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # script errors, CSP violations

    def by(self, testid: str) -> Locator:
        return self.page.get_by_test_id(testid)

    @property
    def messages(self) -> Locator:
        return self.by("message-list").get_by_test_id("message")

    @property
    def menu(self) -> Locator:
        return self.by("report-menu")

    def category(self, name: str) -> Locator:
        return self.menu.locator(f"[data-testid=report-category][data-category={name}]")

    def frames(self, t: str) -> list[dict[str, Any]]:
        return [frame for frame in self.sent if frame.get("t") == t]

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

    def open_dm(self, username: str) -> None:
        self.by("dm-open-input").fill(username)
        self.by("dm-open-button").click()
        expect(self.by("conversation-title")).to_have_text(username)

    def send(self, text: str) -> None:
        box = self.by("send-input")
        box.fill(text)
        box.press("Enter")
        expect(box).to_have_value("")

    def count_clicks(self) -> None:
        """From now on, window.clicks counts every click on the page."""
        self.page.evaluate(
            "window.clicks = 0;"
            "document.addEventListener('click', () => { window.clicks += 1; }, true);"
        )

    def clicks(self) -> int:
        count: int = self.page.evaluate("window.clicks")
        return count


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
        page.on("websocket", lambda ws: _watch(member, ws))
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


def _watch(member: Member, ws: WebSocket) -> None:
    ws.on("framesent", lambda payload: member.sent.append(json.loads(payload)))
    ws.on("framereceived", lambda payload: member.received.append(json.loads(payload)))


def _note_csp_violation(member: Member, message: ConsoleMessage) -> None:
    if "Content Security Policy" in message.text:
        member.problems.append(f"CSP violation: {message.text}")


def _refuse_dialog(member: Member, dialog: Dialog) -> None:
    member.dialogs.append(dialog.message)
    dialog.dismiss()


def make_moderator(server: ServerProcess) -> str:
    """`chatd users create --role moderator` on the node's database; the moderator's token."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatd",
            "users",
            "create",
            MOD_NAME,
            "--password",
            MOD_PASSWORD,
            "--birthdate",
            "1980-01-01",
            "--role",
            "moderator",
        ],
        env=server.environment(),  # carries CHATD_DATABASE_URL of this node
        cwd=server.cwd,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"users create: {done.returncode} {done.stdout} {done.stderr}"
    status, body = call(
        server, "POST", "/api/login", {"username": MOD_NAME, "password": MOD_PASSWORD}
    )
    assert status == 200, body
    token: str = body["token"]
    return token


def call(
    server: ServerProcess, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    result: tuple[int, Any] = run_coroutine(
        lambda: api(server.base_url, method, path, body, token=token)
    )
    return result


def open_reports(server: ServerProcess, token: str) -> list[dict[str, Any]]:
    status, body = call(server, "GET", "/api/mod/reports", token=token)
    assert status == 200, body
    reports: list[dict[str, Any]] = body["reports"]
    return reports


def dm_between(server: ServerProcess, members: Callable[[str], Member]) -> tuple[Member, Member]:
    """alice and bob on the page; alice writes to bob, and bob has the DM open."""
    alice, bob = members("alice"), members("bob")
    alice.register(server.base_url)
    bob.register(server.base_url)
    alice.open_dm("bob")
    alice.send("you seem mature for 15. don't tell your parents we talk")
    expect(alice.by("message-list").locator("[data-state=delivered]")).to_have_count(1)
    bob.by("conversation").filter(has_text="alice").click()
    expect(bob.messages).to_have_count(1)
    return alice, bob


def test_a_message_is_reported_in_two_clicks_and_reaches_the_moderators(
    server: ServerProcess, members: Callable[[str], Member], artifacts_dir: Path
) -> None:
    mod_token = make_moderator(server)
    alice, bob = dm_between(server, members)
    message = bob.messages.first
    msg_id = int(_attr(message, "data-id"))
    # Nobody is offered to report themselves.
    expect(alice.messages.first.get_by_test_id("report-message")).to_have_count(0)
    expect(alice.messages.first.get_by_test_id("user-menu")).to_have_count(0)

    bob.count_clicks()
    message.get_by_test_id("report-message").click()  # click 1
    expect(bob.menu).to_be_visible()
    expect(bob.by("report-title")).to_have_text("Report a message from alice")
    labels = bob.menu.get_by_test_id("report-category")
    expect(labels).to_have_count(8)
    expect(labels.first).to_have_text(GROOMING)
    expect(labels.first).to_be_focused()
    bob.page.screenshot(path=str(artifacts_dir / "report-menu.png"))

    bob.category("minor_sexual").click()  # click 2: sends the report
    toast = bob.by("toast")
    expect(toast.get_by_test_id("toast-text")).to_have_text(THANKS)
    expect(bob.menu).to_be_hidden()
    assert bob.clicks() == 2
    expect(toast.get_by_test_id("toast-block")).to_have_text("Block alice")  # offered after
    bob.page.screenshot(path=str(artifacts_dir / "report-thanks.png"))

    reports = bob.frames("report")
    assert len(reports) == 1
    assert {k: v for k, v in reports[0].items() if k != "rid"} == {
        "t": "report",
        "category": "minor_sexual",
        "msg": msg_id,
    }
    assert bob.frames("block") == []

    # The moderators have it, as a report of that message, against alice, from bob.
    [report] = open_reports(server, mod_token)
    assert report["category"] == "minor_sexual"
    assert report["msg"] == msg_id
    assert report["conv"] == int(_attr(message, "data-conv"))
    assert report["target"]["username"] == "alice"
    assert report["reporter"]["username"] == "bob"

    # Later the outcome comes as a notice, shown as a banner.
    status, body = call(
        server,
        "POST",
        f"/api/mod/reports/{report['id']}/resolve",
        {"resolution": "warned", "note": "Do not ask members to keep secrets."},
        token=mod_token,
    )
    assert status == 200, body
    notice = bob.page.locator("[data-testid=notice-banner][data-kind=report]")
    expect(notice).to_have_count(1)
    assert bob.dialogs == [] and alice.dialogs == []


def test_block_and_report_from_the_user_menu_blocks_and_files_the_report(
    server: ServerProcess, members: Callable[[str], Member], artifacts_dir: Path
) -> None:
    mod_token = make_moderator(server)
    alice, bob = dm_between(server, members)
    alice_id = int(_attr(bob.messages.first, "data-from"))

    # The sender's name opens the user menu; "Block and report" is a box ticked in it.
    bob.messages.first.get_by_test_id("user-menu").click()
    expect(bob.by("report-title")).to_have_text("Report alice")
    bob.by("report-also-block").check()
    expect(bob.by("report-title")).to_have_text("Block and report alice")
    bob.by("report-note").fill(XSS)
    bob.page.screenshot(path=str(artifacts_dir / "report-menu-block.png"))
    bob.category("harassment").click()

    toast = bob.by("toast")
    expect(toast.get_by_test_id("toast-text")).to_have_text(THANKS)
    expect(toast.get_by_test_id("toast-detail")).to_have_text(
        "You blocked alice. They can no longer message you."
    )
    expect(toast.get_by_test_id("toast-block")).to_have_count(0)  # already blocked
    asked = [f for f in bob.sent if f.get("t") in ("block", "report")]
    assert [f["t"] for f in asked] == ["block", "report"]  # block first, then the report
    assert asked[0]["user"] == alice_id
    assert {k: v for k, v in asked[1].items() if k != "rid"} == {
        "t": "report",
        "category": "harassment",
        "user": alice_id,
        "note": XSS,
    }

    [report] = open_reports(server, mod_token)
    assert report["category"] == "harassment"
    assert report["target"]["id"] == alice_id
    assert report["msg"] is None
    assert report["note"] == XSS

    # The block holds: alice can no longer write to bob in their DM.
    alice.send("hello? why did you stop answering")
    failed = alice.by("message-list").locator("[data-state=failed]")
    expect(failed).to_have_count(1)
    expect(failed).to_contain_text("You cannot message this member.")
    refusals = [f for f in alice.received if f.get("t") == "error"]
    assert [f["code"] for f in refusals] == ["blocked"], refusals
    expect(bob.messages).to_have_count(1)
    # Nothing bob typed ran as markup anywhere.
    assert bob.page.locator("img").count() == 0


def test_the_menu_works_from_the_keyboard_and_blocking_is_offered_after_a_report(
    server: ServerProcess, members: Callable[[str], Member], artifacts_dir: Path
) -> None:
    alice, bob = dm_between(server, members)
    report_button = bob.messages.first.get_by_test_id("report-message")

    report_button.focus()
    bob.page.keyboard.press("Enter")
    expect(bob.menu).to_be_visible()
    expect(bob.menu.get_by_test_id("report-category").first).to_be_focused()
    bob.page.keyboard.press("ArrowDown")
    expect(bob.category("sexual")).to_be_focused()
    bob.page.keyboard.press("Escape")
    expect(bob.menu).to_be_hidden()
    expect(report_button).to_be_focused()
    assert bob.frames("report") == []  # looking is not reporting

    # The DM's own "Report" beside the name: a report on the member, chosen by keyboard.
    bob.by("dm-report").focus()
    bob.page.keyboard.press("Enter")
    expect(bob.by("report-title")).to_have_text("Report alice")
    bob.page.keyboard.press("End")
    expect(bob.category("other")).to_be_focused()
    bob.page.keyboard.press("ArrowUp")
    expect(bob.category("spam")).to_be_focused()
    bob.page.keyboard.press("Enter")
    toast = bob.by("toast")
    expect(toast.get_by_test_id("toast-text")).to_have_text(THANKS)
    assert [f["category"] for f in bob.frames("report")] == ["spam"]

    # Blocking is offered after the report, and is one more press.
    toast.get_by_test_id("toast-block").click()
    expect(bob.by("toast").get_by_test_id("toast-text")).to_have_text(
        "You blocked alice. They can no longer message you."
    )
    assert [f["user"] for f in bob.frames("block")] == [int(_attr(bob.messages.first, "data-from"))]

    # On a narrow screen the menu is a sheet along the bottom.
    bob.page.set_viewport_size({"width": 390, "height": 760})
    bob.messages.first.get_by_test_id("report-message").click()
    expect(bob.menu).to_be_visible()
    box = bob.menu.bounding_box()
    assert box is not None and box["width"] == 390
    assert abs(box["y"] + box["height"] - 760) <= 1
    bob.page.screenshot(path=str(artifacts_dir / "report-menu-narrow.png"))
    assert alice.dialogs == []


def test_a_refused_report_says_so_plainly_and_can_be_tried_again(
    server: ServerProcess, members: Callable[[str], Member]
) -> None:
    alice, bob = members("alice"), members("bob")
    refusing: list[bool] = [True]

    def refuse_reports(route: WebSocketRoute) -> None:
        upstream = route.connect_to_server()

        def from_page(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame.get("t") == "report" and refusing:
                refusing.clear()  # only the first: the server would have said this
                route.send(
                    json.dumps(
                        {
                            "t": "error",
                            "rid": frame["rid"],
                            "code": "rate_limited",
                            "message": "too many reports",
                            "retry_after": 5000,
                        }
                    )
                )
                return
            upstream.send(message)

        route.on_message(from_page)

    bob.page.route_web_socket("**/ws", refuse_reports)
    alice.register(server.base_url)
    bob.register(server.base_url)
    alice.open_dm("bob")
    alice.send("buy followers now")
    bob.by("conversation").filter(has_text="alice").click()
    expect(bob.messages).to_have_count(1)

    bob.messages.first.get_by_test_id("report-message").click()
    bob.category("spam").click()
    error = bob.by("report-error")
    expect(error).to_have_text(
        "The report was not sent: you have sent many reports in a short time. Try again in 5 s."
    )
    expect(bob.menu).to_be_visible()  # still there, to try again
    expect(bob.by("toast")).to_have_count(0)  # no thank-you for a report that was not filed
    expect(bob.category("spam")).to_be_focused()

    bob.category("spam").click()
    expect(bob.by("toast").get_by_test_id("toast-text")).to_have_text(THANKS)
    expect(bob.menu).to_be_hidden()


def _attr(locator: Locator, name: str) -> str:
    value = locator.get_attribute(name)
    assert value is not None, f"no {name} on {locator}"
    return value
