"""Helpers of the multi-node tests: node pairs, members, paced send streams, and the
checks that every member got every acked message exactly once, in seq order.

Accounts are seeded into the shared database through the persistence stores (a user
row and a session row): an argon2 hash costs about half a second of CPU on a loaded test
machine, and these tests are about delivery, not registration. A member's record of
what it received is read from its clients' frames (ChatClient keeps every frame in
arrival order): a `msg` without `rid` came live, one with `rid` answered a `sync`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from support.procs import spawn
from support.redis import PrivateRedis
from support.server import REPO_ROOT, ServerProcess, hermetic_environ, setting_env
from support.wait import async_wait_until

from chatd import auth
from chatd.client import ChatClient, api
from persistence.database import Database
from persistence.sessions import SessionStore
from persistence.users import UserStore

PASSWORD = "correct-horse-battery"
# Seconds for a message to reach every connected member before a test calls it lost.
DELIVERY_TIMEOUT_S = 20.0
# Seconds for the server to close a connection (kick, ban, shutdown) once it should.
CLOSE_TIMEOUT_S = 10.0
# Seconds for a pair of nodes to start together (imports and migrations on a busy box).
NODES_START_TIMEOUT_S = 60.0
# Seconds between two looks at a condition in these tests' waits.
POLL_S = 0.05

# The login-failure limit of shared pairs (per account and per address, a minute).
LOGIN_FAILURES = 4

# Settings of the pairs that a module's tests share: the login test needs its failure
# limit, and a trusted proxy (loopback) so each attempt can come from an address of its
# own; the other tests neither fail logins nor send X-Forwarded-For.
PAIR_SETTINGS: dict[str, object] = {
    "limits_login_failures_per_minute": LOGIN_FAILURES,
    "server_trusted_proxies": ["127.0.0.1"],
}

# Budgets that are not what these tests are about: out of the way.
OPEN_LIMITS: dict[str, object] = {
    "limits_send_rate": 1_000_000,
    "limits_send_burst": 1_000_000,
    "limits_register_per_address_per_hour": 1_000_000,
    "limits_new_dms_per_hour": 1_000_000,
}

_names = itertools.count(1)


def unique(prefix: str) -> str:
    """A username or room name no other test of this run uses."""
    return f"{prefix}{next(_names)}t{int(time.time() * 1000) % 100_000_000}"


# -- nodes -------------------------------------------------------------------------------------


def node_env(db_url: str, broker_url: str, **settings: object) -> dict[str, str]:
    env = {"CHATD_DATABASE_URL": db_url, "CHATD_BROKER_URL": broker_url}
    env.update(setting_env(k, v) for k, v in {**OPEN_LIMITS, **settings}.items())
    return env


def start_together(nodes: Sequence[ServerProcess], timeout: float = NODES_START_TIMEOUT_S) -> None:
    """Starts unstarted nodes at once and waits until every one answers /healthz.

    ServerProcess.start waits for its node alone; starting nodes side by side halves the
    setup of every test here (and has them race for the migration lock, as in production).
    Spawned from this (the main) thread, so the kernel kills them if the test run dies.
    """
    for node in nodes:
        node.cwd.mkdir(parents=True, exist_ok=True)
        node.returncode = None
        node._proc = spawn(  # the harness keeps the Popen there; start() does the same
            node.command(), log_path=node.log_path, env=node.environment(), cwd=node.cwd
        )
    deadline = time.monotonic() + timeout
    waiting = list(nodes)
    while waiting:
        waiting = [n for n in waiting if not n.healthy()]
        for node in waiting:
            if not node.running:
                raise RuntimeError(f"node on port {node.port} exited at start:\n{node.log_tail()}")
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(
                f"node on port {waiting[0].port} did not start:\n{waiting[0].log_tail()}"
            )
        time.sleep(POLL_S)


@dataclass
class Pair:
    """Nodes on one database and one broker, kept for the tests of a module."""

    db_url: str
    broker_url: str
    nodes: list[ServerProcess]
    redis: PrivateRedis | None = None  # the pair's own Redis, when it has one

    def close(self) -> None:
        stop_all(self.nodes)


def stop_all(nodes: Sequence[ServerProcess]) -> None:
    """SIGTERM to every running node first, then reap each: they drain side by side."""
    for node in nodes:
        if node.running:
            node.terminate()
    for node in nodes:
        node.close()


def make_nodes(
    count: int, db_url: str, broker_url: str, *, root: Path, logs: Path, **settings: object
) -> list[ServerProcess]:
    env = node_env(db_url, broker_url, **settings)
    return [
        ServerProcess(env, cwd=root / f"node{i + 1}", log_path=logs / f"node{i + 1}.log")
        for i in range(count)
    ]


async def readyz(node: ServerProcess) -> tuple[int, Any]:
    return await api(node.base_url, "GET", "/readyz")


# -- members -----------------------------------------------------------------------------------


_password_hash: str | None = None


async def _hash() -> str:
    global _password_hash
    if _password_hash is None:
        _password_hash = await auth.hash_password(PASSWORD)
    return _password_hash


@dataclass
class Member:
    """An account and its clients (one per connection it opened, oldest first)."""

    id: int
    username: str
    token: str
    clients: list[ChatClient] = field(default_factory=list)
    # Per client: how many of its frames were looked at, and what they held.
    _seen: list[int] = field(default_factory=list)
    _live: dict[int, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    _synced: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)
    _conv_pushes: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    async def connect(self, node: ServerProcess) -> ChatClient:
        client = await ChatClient.connect(node.ws_url, self.token)
        self.clients.append(client)
        self._seen.append(0)
        return client

    @property
    def client(self) -> ChatClient:
        return self.clients[-1]

    def _scan(self) -> None:
        for index, client in enumerate(self.clients):
            frames = client.frames
            for frame in frames[self._seen[index] :]:
                t = frame.get("t")
                if t == "msg":
                    if "rid" in frame:
                        self._synced.setdefault(frame["conv"], {})[frame["seq"]] = frame
                    else:
                        self._live.setdefault(frame["conv"], []).append((index, frame))
                elif t == "conv" and "rid" not in frame:
                    self._conv_pushes.append((index, frame))
            self._seen[index] = len(frames)

    def live(self, conv: int, client: int | None = None) -> list[dict[str, Any]]:
        """The live `msg` frames of a conversation, in arrival order (all clients)."""
        self._scan()
        return [f for i, f in self._live.get(conv, []) if client is None or i == client]

    def live_seqs(self, conv: int, client: int | None = None) -> list[int]:
        return [f["seq"] for f in self.live(conv, client)]

    def held(self, conv: int) -> dict[int, dict[str, Any]]:
        """Every message of the conversation it has, live or synced, by seq."""
        self._scan()
        out = dict(self._synced.get(conv, {}))
        out.update((f["seq"], f) for _, f in self._live.get(conv, []))
        return out

    def conv_pushes(self, conv: int) -> list[dict[str, Any]]:
        """`conv` pushes (no rid) of the conversation: membership, or a gap too long."""
        self._scan()
        return [f for _, f in self._conv_pushes if f["conv"] == conv]

    def contiguous(self, conv: int) -> int:
        """The highest seq up to which it holds every message (0: none)."""
        held = self.held(conv)
        n = 0
        while n + 1 in held:
            n += 1
        return n

    async def catch_up(self, conv: int, client: ChatClient | None = None) -> None:
        """What a client does after a reconnect or a `conv` push: sync from what it holds."""
        await (client or self.client).sync_all(conv, after=self.contiguous(conv))

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.close()


async def make_members(db_url: str, prefix: str, count: int, role: str = "member") -> list[Member]:
    """Accounts with a live session each, seeded through the persistence stores."""
    password_hash = await _hash()
    db = await Database.connect(db_url)
    try:
        users, sessions = UserStore(db), SessionStore(db)
        out = []
        for _ in range(count):
            name = unique(prefix)
            user = await users.create(
                username=name,
                username_key=name.casefold(),
                email=f"{name}@example.org",
                email_key=f"{name.casefold()}@example.org",
                password_hash=password_hash,
                birthdate=datetime.date(1990, 1, 1),
                role=role,
                created=int(time.time() * 1000),
            )
            token = auth.new_token()
            await sessions.create(
                user_id=user.id,
                token_hash=auth.token_hash(token),
                created=int(time.time() * 1000),
                device="cluster-tests",
                address="127.0.0.1",
                user_agent="tests/cluster",
            )
            out.append(Member(user.id, name, token))
        return out
    finally:
        await db.close()


async def ban_in_database(db_url: str, user_id: int) -> None:
    """A ban as the moderation code stores it: the account banned, every session revoked."""
    db = await Database.connect(db_url)
    try:
        await UserStore(db).set_status(user_id, "banned", None)
        await SessionStore(db).revoke_all(user_id, int(time.time() * 1000))
    finally:
        await db.close()


async def connect_all(members: Iterable[Member], nodes: Sequence[ServerProcess]) -> None:
    """Connects member i to node i mod len(nodes)."""
    await asyncio.gather(*(m.connect(nodes[i % len(nodes)]) for i, m in enumerate(members)))


async def join_room(members: Sequence[Member], name: str) -> int:
    """Every member joins; returns the room's conversation id."""
    first = await members[0].client.request({"t": "room.join", "room": name})
    conv = int(first["conv"])
    await asyncio.gather(*(m.client.request({"t": "room.join", "room": name}) for m in members[1:]))
    return conv


# -- moderators ---------------------------------------------------------------------------------


def _create_moderator(db_url: str, name: str, password: str) -> None:
    """`chatd users create NAME --role moderator` on the test database."""
    env = hermetic_environ()
    env["CHATD_DATABASE_URL"] = db_url
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatd",
            "users",
            "create",
            name,
            "--password",
            password,
            "--birthdate",
            "1980-01-01",
            "--role",
            "moderator",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"users create failed: {result.stdout}{result.stderr}"


async def moderator_token(pair: Pair) -> str:
    name, password = unique("mod"), "moderator-password-1"
    await asyncio.to_thread(_create_moderator, pair.db_url, name, password)
    status, body = await api(
        pair.nodes[0].base_url, "POST", "/api/login", {"username": name, "password": password}
    )
    assert status == 200, body
    return str(body["token"])


async def route_missing(base_url: str, path: str) -> bool:
    """Unrouted paths answer 404 to anyone; a routed /api/mod/ path wants a moderator."""
    status, _ = await api(base_url, "POST", path, {"reason": "probe"})
    return status == 404


# -- sending -----------------------------------------------------------------------------------


@dataclass
class Sent:
    conv: int
    cmid: str
    text: str
    at: float  # time.time() when it went out
    ack: dict[str, Any] | None = None
    error: dict[str, Any] | None = None  # an error frame (say, unavailable)
    lost: str | None = None  # no reply: the connection went away, or a timeout
    acked_at: float | None = None


async def send_one(client: ChatClient, sent: Sent, timeout: float = 30.0) -> Sent:
    frame = {"t": "send", "conv": sent.conv, "text": sent.text, "cmid": sent.cmid}
    try:
        reply = await client.request(frame, timeout=timeout, raise_error=False)
    except (ConnectionError, TimeoutError, websockets.ConnectionClosed) as exc:
        sent.lost = repr(exc)
        return sent
    if reply.get("t") == "ack":
        sent.ack, sent.acked_at = reply, time.time()
    else:
        sent.error = reply
    return sent


@dataclass
class Stream:
    """A paced stream of sends on one client; `sent` fills in as replies arrive."""

    conv: int
    tag: str
    sent: list[Sent] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def acked(self) -> list[Sent]:
        return [s for s in self.sent if s.ack is not None]

    @property
    def unanswered(self) -> list[Sent]:
        return [s for s in self.sent if s.ack is None]

    async def wait(self) -> Stream:
        assert self.task is not None
        await self.task
        return self


def start_stream(
    client: ChatClient,
    conv: int,
    *,
    count: int,
    rate: float,
    tag: str | None = None,
    until: Callable[[], bool] | None = None,
) -> Stream:
    """Sends up to `count` messages at `rate` per second (pacing, not waiting for acks:
    sends pipeline as a busy client's do); stops early when the client's connection
    closes, `stop` is set or `until()` turns true."""
    stream = Stream(conv, tag or unique("s"))

    async def run() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        replies = []
        for i in range(count):
            if stream.stop.is_set() or client.closed.is_set() or (until and until()):
                break
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the sender, not waiting for an outcome
            sent = Sent(
                conv, f"{stream.tag}-{i}", f"{stream.tag} {i} {time.time_ns()}", time.time()
            )
            stream.sent.append(sent)
            replies.append(loop.create_task(send_one(client, sent)))
        await asyncio.gather(*replies)

    stream.task = asyncio.get_running_loop().create_task(run())
    return stream


async def resend(client: ChatClient, sents: Iterable[Sent]) -> None:
    """Sends again, with the same cmids, what got no ack (as a client does after
    `unavailable` or a lost connection); each gets its ack or its error anew."""
    for s in sents:
        s.error = s.lost = None
        await send_one(client, s)


# -- what arrived --------------------------------------------------------------------------------


async def truth(client: ChatClient, conv: int) -> dict[int, str]:
    """The conversation as storage has it, through `sync`: seq -> cmid."""
    msgs = await client.sync_all(conv)
    seqs = [m["seq"] for m in msgs]
    assert seqs == list(range(1, len(seqs) + 1)), f"conv {conv}: seqs not gapless: {seqs[:20]}"
    return {m["seq"]: m["cmid"] for m in msgs}


def check_acked_stored(streams: Iterable[Stream], stored: dict[int, dict[int, str]]) -> None:
    """Every ack names the seq storage gives its cmid, and no cmid is stored twice."""
    for stream in streams:
        conv_rows = stored[stream.conv]
        for s in stream.acked:
            assert s.ack is not None
            seq = s.ack["seq"]
            assert conv_rows.get(seq) == s.cmid, f"acked {s.cmid} at seq {seq} is not stored there"
    for conv, rows in stored.items():
        cmids = list(rows.values())
        assert len(cmids) == len(set(cmids)), f"conv {conv}: a cmid is stored twice"


async def wait_live_complete(
    members: Iterable[Member],
    conv: int,
    last: Callable[[], int] | int,
    *,
    after: Callable[[Member], int] | None = None,
    timeout: float = DELIVERY_TIMEOUT_S,
) -> None:
    """Waits until every member's live frames reach `last` (or hold everything through
    `last`, for members that sync)."""
    members = list(members)

    def done() -> bool:
        n = last() if callable(last) else last
        return all(
            m.contiguous(conv) >= n or max(m.live_seqs(conv), default=0) >= n for m in members
        )

    def describe() -> str:
        n = last() if callable(last) else last
        behind = [
            (m.username, m.contiguous(conv), len(m.live_seqs(conv)))
            for m in members
            if m.contiguous(conv) < n
        ]
        return f"conv {conv}: members behind seq {n} (name, contiguous, live count): {behind}"

    await async_wait_until(done, timeout, POLL_S, message=describe)


def check_live_exactly_once(
    member: Member, conv: int, rows: dict[int, str], first: int = 1, client: int | None = None
) -> None:
    """The member's live frames are seqs first..last of storage, each once, in order, and
    each is the message storage has at that seq."""
    got = member.live(conv, client)
    seqs = [f["seq"] for f in got]
    want = list(range(first, max(rows) + 1))
    if seqs != want:
        dups = sorted({s for s in seqs if seqs.count(s) > 1})
        missing = sorted(set(want) - set(seqs))
        out_of_order = [b for a, b in itertools.pairwise(seqs) if b <= a][:10]
        raise AssertionError(
            f"{member.username} conv {conv}: live seqs {first}..{max(rows)} not each once in "
            f"order: {len(seqs)} frames, duplicates {dups[:10]}, missing {missing[:10]}, "
            f"out of order {out_of_order}"
        )
    for f in got:
        assert f["cmid"] == rows[f["seq"]], f"{member.username}: seq {f['seq']} is another message"


def check_holds_exactly(member: Member, conv: int, rows: dict[int, str]) -> None:
    """Live and synced together, the member holds storage's messages and nothing else;
    live frames came in seq order, none twice."""
    live = member.live_seqs(conv)
    assert len(live) == len(set(live)), f"{member.username}: a message came live twice"
    for client in range(len(member.clients)):
        seqs = member.live_seqs(conv, client)
        assert seqs == sorted(seqs), f"{member.username} client {client}: live out of order"
    held = member.held(conv)
    assert sorted(held) == sorted(rows), (
        f"{member.username} conv {conv}: holds {len(held)} of {len(rows)}, missing "
        f"{sorted(set(rows) - set(held))[:10]}"
    )
    for seq, frame in held.items():
        assert frame["cmid"] == rows[seq]
