"""Helpers of the chat-core tests: accounts, clients closed at teardown, message collection,
and a pair of bystanders whose conversation must stay unaffected by what a test does.

Accounts are seeded straight into the node's database by default (a user row and a
session row, through the persistence stores): one argon2 hash costs half a second of CPU
on the test machine, and only the registration tests are about registering. They use
`Kit.register`, the HTTP path.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from support.server import ServerProcess
from support.wait import async_wait_until

from chatd import auth, views
from chatd.client import ChatClient, api, register
from persistence.database import Database
from persistence.sessions import SessionStore
from persistence.users import UserStore

PASSWORD = "correct-horse-battery"
# Seconds a message may take to reach a connected member before a test calls it lost.
DELIVERY_TIMEOUT_S = 10.0
# Seconds a test waits for a connection to be closed by the server.
CLOSE_TIMEOUT_S = 10.0

# Settings of the node most tests share: accounts and sends are not what those tests are
# about, so their budgets are out of the way (the limit tests run nodes of their own).
SHARED_SETTINGS: dict[str, object] = {
    "limits_register_per_address_per_hour": 1_000_000,
    "limits_send_rate": 100_000,
    "limits_send_burst": 100_000,
}


def settings_env(settings: dict[str, object]) -> dict[str, str]:
    """Settings as CHATD_* variables: booleans true/false, lists as JSON arrays."""
    env = {}
    for key, value in settings.items():
        name = key if key.startswith("CHATD_") else f"CHATD_{key.upper()}"
        if isinstance(value, bool):
            env[name] = "true" if value else "false"
        elif isinstance(value, list | tuple):
            env[name] = json.dumps(list(value))
        else:
            env[name] = str(value)
    return env


class NodePool:
    """Nodes for the whole session, one per set of settings, each on its own SQLite file.

    For tests that neither stop their node nor use up a per-address budget that another
    test of the same settings needs; the others use `start_server`.
    """

    def __init__(self, root: Path, logs: Path) -> None:
        self._root = root
        self._logs = logs
        self._nodes: dict[tuple[tuple[str, str], ...], ServerProcess] = {}

    def get(self, **settings: object) -> ServerProcess:
        env = settings_env(settings)
        key = tuple(sorted(env.items()))
        node = self._nodes.get(key)
        if node is not None and node.running:
            return node
        number = len(self._nodes) + 1
        base = self._root / f"pooled{number}"
        base.mkdir(parents=True, exist_ok=True)
        env = {
            "CHATD_DATABASE_URL": f"sqlite+aiosqlite:///{base / 'chatd.db'}",
            "CHATD_BROKER_URL": "memory://",
            **env,
        }
        node = ServerProcess(
            env, cwd=base / "cwd", log_path=self._logs / f"chatd.pooled-node{number}.log"
        )
        node.start()
        self._nodes[key] = node
        return node

    def close(self) -> None:
        for node in self._nodes.values():
            node.close()


_names = itertools.count(1)
_password_hash: str | None = None  # PASSWORD hashed once per test run


async def _hash_of_password() -> str:
    global _password_hash
    if _password_hash is None:
        _password_hash = await auth.hash_password(PASSWORD)
    return _password_hash


def unique_name(prefix: str = "u") -> str:
    """A username no other test of the session uses (3 to 32 of letters, digits, _ . -)."""
    return f"{prefix}{next(_names)}_{uuid.uuid4().hex[:8]}"


def pack(frame: Any) -> bytes:
    """Any value as one MessagePack message (frames, but also the wrong things)."""
    packed: bytes = msgpack.packb(frame, use_bin_type=True)
    return packed


@dataclass(frozen=True)
class Account:
    id: int
    username: str
    token: str
    password: str
    user: dict[str, Any]


@dataclass
class Kit:
    """Talks to one node: registers accounts and opens clients, all closed at teardown."""

    server: ServerProcess
    clients: list[ChatClient] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def ws_url(self) -> str:
        return self.server.ws_url

    _db: Database | None = None

    async def _database(self) -> Database:
        if self._db is None:
            self._db = await Database.connect(self.server.env["CHATD_DATABASE_URL"])
        return self._db

    async def account(
        self, name: str | None = None, *, birthdate: str = "1990-01-01", role: str = "member"
    ) -> Account:
        """A new account with a live session, seeded into the node's database."""
        username = name or unique_name()
        db = await self._database()
        now = int(time.time() * 1000)
        user = await UserStore(db).create(
            username=username,
            username_key=username.casefold(),
            email=f"{username}@example.org",
            email_key=f"{username.casefold()}@example.org",
            password_hash=await _hash_of_password(),
            birthdate=datetime.date.fromisoformat(birthdate),
            role=role,
            created=now,
        )
        token = auth.new_token()
        await SessionStore(db).create(
            user_id=user.id,
            token_hash=auth.token_hash(token),
            created=now,
            device="chatkit",
            address="127.0.0.1",
            user_agent="chatkit",
        )
        return Account(user.id, user.username, token, PASSWORD, views.user_object(user))

    async def accounts(self, n: int) -> list[Account]:
        return [await self.account() for _ in range(n)]

    async def register(
        self,
        name: str | None = None,
        *,
        birthdate: str = "1990-01-01",
        password: str = PASSWORD,
        headers: Mapping[str, str] | None = None,
    ) -> Account:
        """A new account through POST /api/register (raises unless 201)."""
        username = name or unique_name()
        body = await register(
            self.base_url, username, password, birthdate, headers=dict(headers or {})
        )
        user = body["user"]
        return Account(user["id"], user["username"], body["token"], password, user)

    async def connect(
        self,
        who: Account | str | None,
        *,
        codec: str = "msgpack",
        origin: str | None = None,
        auth: bool = True,
    ) -> ChatClient:
        token = who.token if isinstance(who, Account) else who
        client = await ChatClient.connect(self.ws_url, token, codec=codec, origin=origin, auth=auth)
        self.clients.append(client)
        return client

    async def api(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        return await api(self.base_url, method, path, body, token=token, headers=headers)

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), CLOSE_TIMEOUT_S)
        self.clients.clear()
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()


async def join_room(clients: Iterable[ChatClient], name: str | None = None) -> int:
    """Joins every client to one room (a fresh one unless named); returns its conv id."""
    room = name or unique_name("room")
    convs = {(await c.request({"t": "room.join", "room": room}))["conv"] for c in clients}
    assert len(convs) == 1, f"one room, got {convs}"
    return convs.pop()


async def collect_msgs(
    client: ChatClient, conv: int, count: int, timeout: float = DELIVERY_TIMEOUT_S
) -> list[dict[str, Any]]:
    """The next `count` live `msg` pushes of `conv` on this client (other pushes skipped)."""
    got: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(got) < count:
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"{len(got)} of {count} messages of conv {conv} within {timeout}s")
        try:
            frame = await client.next_push(timeout=left)
        except TimeoutError:
            continue
        if frame.get("t") == "msg" and frame.get("conv") == conv:
            got.append(frame)
    return got


def assert_gapless(frames: list[dict[str, Any]], first: int = 1) -> None:
    """Seqs first, first+1, ... exactly once each, in order."""
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(first, first + len(seqs))), f"seqs not gapless: {seqs[:50]}..."


async def expect_closed(client: ChatClient, code: int, timeout: float = CLOSE_TIMEOUT_S) -> None:
    got = await client.wait_closed(timeout)
    assert got == code, f"closed {got}, expected {code}"


def errors_of(client: ChatClient) -> list[dict[str, Any]]:
    return [f for f in client.frames if f.get("t") == "error"]


async def roundtrip(client: ChatClient) -> None:
    """Proves the connection is open and served: a ping gets its pong."""
    pong = await client.request({"t": "ping"})
    assert pong["t"] == "pong" and isinstance(pong["ts"], int)


async def fresh_window(window_s: int, need_s: float) -> None:
    """Waits, if need be, until a fixed counting window of the node has `need_s` seconds
    left, so that a limit test does not straddle two windows.

    The node's in-memory limiter counts in windows of time.monotonic() // window_s, and
    CLOCK_MONOTONIC is one clock for every process of the machine. Another window shape
    only makes this wait unneeded, never wrong.
    """
    start = time.monotonic() // window_s
    if (start + 1) * window_s - time.monotonic() >= need_s:
        return
    await async_wait_until(
        lambda: time.monotonic() // window_s != start, timeout=need_s + 1, interval=0.05
    )


class Chatter:
    """Two members of a DM exchanging messages in the background, each one checked on
    arrival: what a test does to other connections must not disturb them."""

    def __init__(self, a: ChatClient, b: ChatClient, conv: int) -> None:
        self.a, self.b, self.conv = a, b, conv
        self.rounds = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, kit: Kit) -> Chatter:
        one, two = await kit.accounts(2)
        a, b = await kit.connect(one), await kit.connect(two)
        conv = (await a.request({"t": "dm.open", "user": two.id}))["conv"]
        chatter = cls(a, b, conv)
        chatter._task = asyncio.get_running_loop().create_task(chatter._run())
        await chatter.flowing(2)
        return chatter

    async def _run(self) -> None:
        for i in itertools.count():
            if self._stop.is_set():
                return
            sender, receiver = (self.a, self.b) if i % 2 == 0 else (self.b, self.a)
            text = f"chatter {i}"
            ack = await sender.send(self.conv, text)
            assert ack["seq"] == i + 1, f"bystander ack {ack}, expected seq {i + 1}"
            for side in (receiver, sender):  # the sender gets its own message too
                (got,) = await collect_msgs(side, self.conv, 1)
                assert (got["seq"], got["text"]) == (i + 1, text), f"bystander got {got}"
            self.rounds = i + 1

    def _check_task(self) -> None:
        assert self._task is not None
        if self._task.done():
            self._task.result()  # raises what went wrong
            raise AssertionError("the bystanders stopped talking")

    async def flowing(self, more: int = 3) -> None:
        """Waits until `more` further rounds went through, each delivered."""
        target = self.rounds + more

        def done() -> bool:
            self._check_task()
            return self.rounds >= target

        await async_wait_until(
            done,
            timeout=DELIVERY_TIMEOUT_S,
            message=lambda: f"bystanders at {self.rounds} rounds, expected {target}",
        )

    async def halt(self) -> None:
        """Stops them without checking anything (fixture teardown)."""
        self._stop.set()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def stop(self) -> None:
        """Checks they still talk, stops them, and checks their history is whole."""
        await self.flowing()
        self._stop.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, DELIVERY_TIMEOUT_S)
        history = await self.a.sync_all(self.conv)
        assert_gapless(history)
        assert [m["text"] for m in history] == [f"chatter {i}" for i in range(len(history))]
        assert len(history) == self.rounds
