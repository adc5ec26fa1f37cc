"""Helpers of the moderation tests: accounts (members through the API, staff through the
CLI), clients closed at teardown, HTTP calls, and direct looks into the node's database."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import math
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.server import REPO_ROOT, ServerProcess, hermetic_environ

from chatd import auth
from chatd.client import ChatClient, api, register
from persistence.database import Database
from persistence.sessions import SessionStore
from persistence.sightings import SightingStore
from persistence.users import UserStore
from protocol.text import normalize_email_key

PASSWORD = "correct-horse-battery"
# Budgets out of the way: the tests here are not about them (one test sets its own).
GENEROUS: dict[str, object] = {
    "limits_register_per_address_per_hour": 1_000_000,
    "limits_reports_per_hour": 1_000_000,
    "limits_new_dms_per_hour": 1_000_000,
    "limits_send_rate": 100_000,
    "limits_send_burst": 100_000,
}
# Seconds a CLI call (`chatd users create`) may take.
CLI_TIMEOUT_S = 60.0
# Seconds a test waits for a push that must come.
PUSH_TIMEOUT_S = 5.0

_names = itertools.count(1)
# Staff accounts shared by the tests of a session, by (database, role).
_STAFF: dict[tuple[str, str], Account] = {}


def birthdate_for(age: int, *, today: datetime.date | None = None) -> str:
    """A birthdate that makes someone `age` today, with their birthday 40 days behind."""
    day = today or datetime.datetime.now(datetime.UTC).date()
    try:
        anniversary = day.replace(year=day.year - age)
    except ValueError:  # 29 February
        anniversary = day.replace(year=day.year - age, day=28)
    return (anniversary - datetime.timedelta(days=40)).isoformat()


def unique(tag: str) -> str:
    """A username no other test of the session uses (3 to 32 characters)."""
    return f"{tag[:12]}_{next(_names)}_{os.getpid() % 10000}"


@dataclass
class Account:
    id: int
    username: str
    token: str
    role: str = "member"

    @property
    def ref(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username}


class ModKit:
    """Accounts, clients and calls against one node; `close()` closes the clients."""

    def __init__(self, node: ServerProcess, db: Path | str) -> None:
        """db: the node's SQLite file, or the URL of its database."""
        self.node = node
        self.db_url = db if isinstance(db, str) else f"sqlite+aiosqlite:///{db}"
        self.clients: list[ChatClient] = []
        self._db: Database | None = None

    @property
    def base(self) -> str:
        return self.node.base_url

    @property
    def db_path(self) -> Path:
        prefix = "sqlite+aiosqlite:///"
        assert self.db_url.startswith(prefix), "only a SQLite node has a file"
        return Path(self.db_url[len(prefix) :])

    # -- accounts -----------------------------------------------------------------------

    async def database(self) -> Database:
        if self._db is None:
            self._db = await Database.connect(self.db_url)
        return self._db

    async def member(
        self,
        tag: str = "m",
        *,
        age: int | None = None,
        birthdate: str = "1990-01-01",
        email: str | None = None,
        device: str | None = None,
        created: int | None = None,
        org: str | None = None,
        via_api: bool = False,
    ) -> Account:
        """A member with a live session token.

        Made straight in the node's database (a registration's rows: account, session,
        sighting), because an argon2 hash per account costs most of a second here; with
        via_api, through POST /api/register instead, for tests about registering.
        """
        name = unique(tag)
        born = birthdate_for(age) if age is not None else birthdate
        email = email or f"{name}@example.org"
        if via_api:
            headers = {"X-Device-Id": device} if device else None
            body = await register(self.base, name, PASSWORD, born, email, headers=headers)
            return Account(body["user"]["id"], body["user"]["username"], body["token"])
        db = await self.database()
        now = int(time.time() * 1000)
        user = await UserStore(db).create(
            username=name,
            username_key=name.casefold(),
            email=email,
            email_key=normalize_email_key(email),
            password_hash=await _password_hash(),
            birthdate=datetime.date.fromisoformat(born),
            created=now if created is None else created,
        )
        if org:
            await UserStore(db).set_org(user.id, org)
        token = auth.new_token()
        seen = {"device": device or auth.new_device_id(), "address": "127.0.0.1"}
        await SessionStore(db).create(
            user_id=user.id,
            token_hash=auth.token_hash(token),
            created=now,
            user_agent="modkit",
            **seen,
        )
        await SightingStore(db).record(
            user_id=user.id, kind="registration", ts=now, user_agent="modkit", **seen
        )
        return Account(user.id, name, token)

    async def staff(
        self,
        role: str = "moderator",
        *,
        fresh: bool = False,
        tag: str | None = None,
        org: str | None = None,
        age: int = 35,
    ) -> Account:
        """An account made with `chatd users create --role [--org]`, then logged in. The
        session shares one per role and node unless `fresh` (the CLI takes a second)."""
        key = (self.db_url, role)
        if not fresh and org is None and key in _STAFF:
            return _STAFF[key]
        name = unique(tag or role[:3])
        argv = [sys.executable, "-m", "chatd", "users", "create", name]
        argv += ["--password", PASSWORD, "--birthdate", birthdate_for(age), "--role", role]
        if org:
            argv += ["--org", org]
        await asyncio.to_thread(self._cli, argv)
        token = await self.login(name)
        status, me = await api(self.base, "GET", "/api/me", token=token)
        assert status == 200, me
        account = Account(me["user"]["id"], name, token, role)
        if not fresh and org is None:
            _STAFF[key] = account
        return account

    def promote(self, account: Account, role: str) -> Account:
        """Gives an account a role straight in the database (what `chatd users set --role`
        does, without a second of CLI start-up); it counts from the next request."""
        self.sql("UPDATE users SET role = ? WHERE id = ?", (role, account.id))
        account.role = role
        return account

    def _cli(self, argv: list[str]) -> None:
        env = hermetic_environ()
        env["PYTHONPATH"] = str(REPO_ROOT)
        env["CHATD_DATABASE_URL"] = self.db_url
        env["CHATD_LOG_LEVEL"] = "warning"
        done = subprocess.run(
            argv,
            env=env,
            cwd=self.node.cwd,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, f"{argv}: {done.returncode}\n{done.stdout}\n{done.stderr}"

    async def login(self, username: str, *, device: str | None = None) -> str:
        status, body = await self.login_status(username, device=device)
        assert status == 200, body
        return str(body["token"])

    async def login_status(self, username: str, *, device: str | None = None) -> tuple[int, Any]:
        headers = {"X-Device-Id": device} if device else None
        return await api(
            self.base,
            "POST",
            "/api/login",
            {"username": username, "password": PASSWORD},
            headers=headers,
        )

    # -- clients and calls --------------------------------------------------------------

    async def connect(self, who: Account | str, *, codec: str = "json") -> ChatClient:
        token = who if isinstance(who, str) else who.token
        client = await ChatClient.connect(self.node.ws_url, token, codec=codec)
        self.clients.append(client)
        return client

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, as_: Account | None
    ) -> tuple[int, Any]:
        return await api(self.base, method, path, body, token=None if as_ is None else as_.token)

    async def ok(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        as_: Account,
        status: int = 200,
    ) -> Any:
        got, answer = await self.call(method, path, body, as_=as_)
        assert got == status, f"{method} {path}: {got} {answer}"
        return answer

    async def report(self, reporter: Account, **fields: Any) -> int:
        """Files a report through POST /api/reports; its id."""
        answer = await self.ok("POST", "/api/reports", fields, as_=reporter, status=201)
        assert answer["report"]["status"] == "open"
        return int(answer["report"]["id"])

    async def dm(self, a: ChatClient, b: Account) -> int:
        reply = await a.request({"t": "dm.open", "user": b.id})
        return int(reply["conv"])

    async def room(self, clients: list[ChatClient], name: str | None = None) -> int:
        name = name or unique("room")
        conv = 0
        for client in clients:
            conv = int((await client.request({"t": "room.join", "room": name}))["conv"])
        return conv

    # -- the database -------------------------------------------------------------------

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """One statement on the node's SQLite file, committed (for what no API may do)."""
        conn = sqlite3.connect(self.db_path, timeout=10)
        try:
            rows = conn.execute(statement, params).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
        if self._db is not None:
            await self._db.close()


_HASH: list[str] = []


async def _password_hash() -> str:
    """PASSWORD's argon2 hash, made once per session."""
    if not _HASH:
        _HASH.append(await auth.hash_password(PASSWORD))
    return _HASH[0]


async def next_event(
    client: ChatClient, kind: str, *, timeout: float = PUSH_TIMEOUT_S, **match: Any
) -> dict[str, Any]:
    """The next `mod.event` of this kind (whose fields match, e.g. report id), skipping
    others."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no mod.event {kind} {match} within {timeout}s")
        frame = await client.next_push("mod.event", timeout=left)
        event = frame["event"]
        if event["kind"] != kind:
            continue
        if all(_get(event, path) == value for path, value in match.items()):
            return event  # type: ignore[no-any-return]


def _get(obj: Any, path: str) -> Any:
    for part in path.split("__"):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def percentile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of values lie (nearest rank)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


def latency_summary(latencies: list[float]) -> dict[str, float]:
    """Samples, p50, p99 and max of latencies in seconds, as milliseconds."""
    return {
        "samples": len(latencies),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
    }
