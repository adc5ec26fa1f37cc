"""The moderation console in headless Chromium against a real chatd node.

Member clients speak the JSON subprotocol through `websockets.sync.client` in this thread:
sync Playwright keeps its own event loop running here, so no asyncio client can share it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Dialog, Page, ViewportSize, expect
from support.aio import run_coroutine
from support.server import ServerProcess
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from chatd.client import register

WAIT_MS = 15_000
"""Milliseconds any expectation on the page waits for it to get there."""

WAIT_S = WAIT_MS / 1000
"""The same deadline in seconds, for the member clients."""

CLI_TIMEOUT_S = 60.0
"""Seconds `chatd users create` gets to finish."""

VIEWPORT: ViewportSize = {"width": 1440, "height": 900}
"""The console is a desktop tool; screenshots are taken at this size (CSS pixels)."""

MOD_NAME = "mod1"
MOD_PASSWORD = "password123"
MEMBER_PASSWORD = "correct horse battery staple"
XSS = "<img src=x onerror=alert(1)>"


class Member:
    """One member on /ws with the JSON subprotocol: requests wait for their reply by rid,
    everything else is kept in `pushes`, in order."""

    def __init__(self, ws: ClientConnection, token: str) -> None:
        self.ws = ws
        self.pushes: list[dict[str, Any]] = []
        self._rids = itertools.count(1)
        self.ready = self.request({"t": "auth", "token": token})
        assert self.ready["t"] == "ready", self.ready

    def _recv(self, deadline: float) -> dict[str, Any]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        frame: dict[str, Any] = json.loads(self.ws.recv(timeout=left))
        return frame

    def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        rid = next(self._rids)
        self.ws.send(json.dumps({**frame, "rid": rid}))
        deadline = time.monotonic() + WAIT_S
        while True:
            reply = self._recv(deadline)
            if reply.get("rid") == rid:
                return reply
            self.pushes.append(reply)

    def next_push(self, t: str) -> dict[str, Any]:
        """The first push of type `t`, kept or still to come, within WAIT_S."""
        deadline = time.monotonic() + WAIT_S
        seen = 0
        while True:
            for frame in self.pushes[seen:]:
                if frame.get("t") == t:
                    self.pushes.remove(frame)
                    return frame
            seen = len(self.pushes)
            self.pushes.append(self._recv(deadline))

    def wait_closed(self) -> int | None:
        """Read until the server closes the connection (within WAIT_S); its close code."""
        deadline = time.monotonic() + WAIT_S
        try:
            while True:
                self.pushes.append(self._recv(deadline))
        except ConnectionClosed:
            return self.ws.close_code
        except TimeoutError:
            raise AssertionError(f"still open after {WAIT_S}s; got {self.pushes}") from None


@contextlib.contextmanager
def member_connection(server: ServerProcess, token: str) -> Iterator[Member]:
    """A member connected and authenticated; the connection closes on leaving."""
    with connect(
        server.ws_url, subprotocols=[Subprotocol("chatd.v1.json")], open_timeout=WAIT_S
    ) as ws:
        yield Member(ws, token)


def make_moderator(server: ServerProcess, username: str) -> None:
    """`chatd users create --role moderator` on the node's own database and settings."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatd",
            "users",
            "create",
            username,
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


def register_member(server: ServerProcess, username: str, birthdate: str) -> dict[str, Any]:
    body: dict[str, Any] = run_coroutine(
        lambda: register(server.base_url, username, MEMBER_PASSWORD, birthdate)
    )
    return body


@dataclass
class Console:
    """The browser page, and the alert/confirm/prompt dialogs any script on it opened."""

    page: Page
    dialogs: list[str] = field(default_factory=list)


@pytest.fixture
def console(page: Page) -> Iterator[Console]:
    """The page at desktop size; a script dialog (alert from injected markup) is recorded."""
    page.set_viewport_size(VIEWPORT)
    page.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)
    made = Console(page)

    def on_dialog(dialog: Dialog) -> None:
        made.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    yield made


def has_class(name: str) -> re.Pattern[str]:
    return re.compile(rf"(^|\s){re.escape(name)}(\s|$)")


def log_in(page: Page, server: ServerProcess, username: str, password: str) -> None:
    response = page.goto(f"{server.base_url}/console")
    assert response is not None and response.status == 200
    csp = response.header_value("content-security-policy") or ""
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp, csp
    page.get_by_test_id("login-username").fill(username)
    page.get_by_test_id("login-password").fill(password)
    page.get_by_test_id("login-password").press("Enter")


@pytest.mark.browser
@pytest.mark.slow
def test_a_report_reaches_the_console_live_as_text_and_x_kicks_the_member(
    server: ServerProcess, console: Console, artifacts_dir: Path
) -> None:
    page = console.page
    make_moderator(server, MOD_NAME)
    log_in(page, server, MOD_NAME, MOD_PASSWORD)
    expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "live")
    expect(page.get_by_test_id("queue-empty")).to_be_visible()
    # The token is in sessionStorage, and no cookie a script can read holds it.
    token = page.evaluate("sessionStorage.getItem('chatd.console.token')")
    assert token and token not in page.evaluate("document.cookie")
    page.evaluate("window.sameDocument = true")  # gone if the page reloads

    alice = register_member(server, "alice", "1990-05-01")
    bob = register_member(server, "bob", "1992-07-01")
    with (
        member_connection(server, alice["token"]) as alice_ws,
        member_connection(server, bob["token"]) as bob_ws,
    ):
        conv = alice_ws.request({"t": "dm.open", "user": "bob"})
        assert conv["t"] == "conv", conv
        ack = alice_ws.request({"t": "send", "conv": conv["conv"], "text": XSS, "cmid": "m1"})
        assert ack["t"] == "ack", ack
        msg = bob_ws.next_push("msg")
        assert msg["text"] == XSS and msg["id"] == ack["id"]
        reported = bob_ws.request(
            {"t": "report", "category": "harassment", "msg": msg["id"], "note": XSS}
        )
        assert reported["t"] == "reported", reported

        # The case shows up without a reload, marked new, both strings as plain text.
        row = page.get_by_test_id("queue-row")
        expect(row).to_have_count(1)
        expect(row).to_have_class(has_class("is-new"))
        expect(row.get_by_test_id("queue-category")).to_have_text("harassment")
        expect(row.get_by_test_id("queue-target")).to_have_text("alice")
        expect(row.get_by_test_id("queue-reporters")).to_have_text("1")
        expect(row.get_by_test_id("queue-note")).to_have_text(XSS)
        assert page.evaluate("window.sameDocument") is True
        assert page.locator("img").count() == 0
        page.screenshot(path=str(artifacts_dir / "console-queue.png"))

        # j selects the case, Enter opens it; the snapshot holds the reported message.
        page.keyboard.press("j")
        expect(row).to_have_class(has_class("is-selected"))
        page.keyboard.press("Enter")
        expect(page.get_by_test_id("case-view")).to_be_visible()
        expect(page.get_by_test_id("report-note")).to_have_text(XSS)
        marked = page.locator("[data-testid=snapshot-message][data-reported=true]")
        expect(marked).to_have_count(1)
        expect(marked.get_by_test_id("snapshot-text")).to_have_text(XSS)
        expect(marked.get_by_test_id("snapshot-sender")).to_have_text("alice")
        expect(page.get_by_test_id("account-username")).to_have_text("alice")
        assert page.locator("img").count() == 0
        page.screenshot(path=str(artifacts_dir / "console-case.png"))

        # x asks first; Enter in the dialog confirms, and alice is kicked with 4003.
        page.keyboard.press("x")
        dialog = page.get_by_test_id("confirm-dialog")
        expect(dialog).to_be_visible()
        reason = page.get_by_test_id("confirm-reason").input_value()
        assert reason.strip()
        page.keyboard.press("Enter")
        assert alice_ws.wait_closed() == 4003
        kicked = [f for f in alice_ws.pushes if f.get("t") == "kicked"]
        assert kicked and kicked[0]["reason"] == reason.strip(), alice_ws.pushes

        # The case is resolved: back on the queue, which is empty, and the kick is listed.
        expect(dialog).to_be_hidden()
        expect(page.get_by_test_id("queue-view")).to_be_visible()
        expect(page.get_by_test_id("queue-row")).to_have_count(0)
        expect(page.get_by_test_id("activity-item").filter(has_text="alice")).to_have_count(1)

        # ? lists the keys; a opens the audit log, where the kick and the snapshot read are.
        page.keyboard.press("?")
        expect(page.get_by_test_id("keys-dialog")).to_be_visible()
        page.keyboard.press("Escape")
        expect(page.get_by_test_id("keys-dialog")).to_be_hidden()
        page.keyboard.press("a")
        audit = page.get_by_test_id("audit-row")
        expect(audit.filter(has_text="alice").first).to_be_visible()
        page.screenshot(path=str(artifacts_dir / "console-audit.png"))

        # Keys do nothing while typing in a field.
        actor = page.get_by_test_id("audit-actor")
        actor.press_sequentially("x?")
        expect(actor).to_have_value("x?")
        expect(page.get_by_test_id("confirm-dialog")).to_be_hidden()
        expect(page.get_by_test_id("keys-dialog")).to_be_hidden()
        assert console.dialogs == []


@pytest.mark.browser
@pytest.mark.slow
def test_a_member_is_told_the_console_is_for_moderators(
    server: ServerProcess, console: Console
) -> None:
    page = console.page
    register_member(server, "carol", "1995-03-03")
    log_in(page, server, "carol", MEMBER_PASSWORD)
    error = page.get_by_test_id("login-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("not a moderator")
    expect(page.get_by_test_id("app")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('chatd.console.token')") is None
