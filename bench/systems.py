"""The systems under test: chatd (2 nodes, Redis, PostgreSQL) and the three peers.

Each deployment starts its processes unpinned (setup, e.g. argon2 hashing of the
benchmark accounts, goes faster on two cores), then `pin()` puts them on the server core.
`groups` names the processes whose CPU the table shows.
"""

from __future__ import annotations

import concurrent.futures
import json
import sys
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import BENCH, PEERS_PYTHON, SERVER_CORE, PidSource, Proc, free_port, log, pin, tree
from support.postgres import PrivatePostgres
from support.redis import PrivateRedis
from support.server import ServerProcess

# Registrations in flight at once (each is an argon2 hash on the server).
REGISTER_CONCURRENCY = 6
# Seconds one registration may take on a busy machine.
REGISTER_TIMEOUT_S = 120.0
# Limits raised for the run, so that the benchmark measures speed and not the limits.
RAISED_LIMITS = {
    "CHATD_LIMITS_SEND_RATE": "1000000",
    "CHATD_LIMITS_SEND_BURST": "1000000",
    "CHATD_LIMITS_REGISTER_PER_ADDRESS_PER_HOUR": "1000000",
    "CHATD_LIMITS_NEW_DMS_PER_HOUR": "1000000",
    "CHATD_LIMITS_REPORTS_PER_HOUR": "1000000",
}


# chatd's own counters read around each step (summed over the nodes).
METRICS = (
    "chatd_gap_fills_total",
    "chatd_messages_filled_total",
    "chatd_send_commit_seconds_sum",
    "chatd_send_commit_seconds_count",
    'chatd_send_commit_seconds_bucket{le="0.02"}',
    'chatd_send_commit_seconds_bucket{le="0.05"}',
)


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    username: str
    token: str


class Deployment:
    name = ""
    kind = ""  # the generator's protocol: chatd, ws or sio
    durable = False
    nodes = 0

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.groups: dict[str, PidSource] = {}
        self.urls: list[str] = []
        self._stack: list[Any] = []  # things with stop() or close(), in start order

    def start(self) -> None:
        raise NotImplementedError

    def pin(self) -> None:
        for pids in self.groups.values():
            pin(list(pids()), SERVER_CORE)

    def stop(self) -> None:
        for item in reversed(self._stack):
            try:
                (getattr(item, "close", None) or item.stop)()
            except Exception as exc:
                log(f"stopping {item!r}: {exc!r}")
        self._stack.clear()

    def _redis(self) -> PrivateRedis:
        redis = PrivateRedis(log_path=self.workdir / "redis.log")
        redis.start()
        self._stack.append(redis)
        self.groups["redis"] = lambda: [redis.pid]
        return redis


class Chatd(Deployment):
    name = "chatd"
    kind = "chatd"
    durable = True

    def __init__(self, workdir: Path, *, nodes: int = 2, codec: str = "json") -> None:
        super().__init__(workdir)
        self.nodes = nodes
        self.codec = codec
        self.accounts: list[Account] = []
        self.servers: list[ServerProcess] = []
        self.env: dict[str, str] = {}

    def start(self) -> None:
        pg = PrivatePostgres(log_path=self.workdir / "postgres.log")
        pg.start()
        self._stack.append(pg)
        pg.create_database("chatd_bench")
        redis = self._redis()
        self.groups["postgres"] = lambda: tree(pg.pid)
        self.env = {
            "CHATD_DATABASE_URL": pg.url("chatd_bench"),
            "CHATD_BROKER_URL": redis.url,
            "CHATD_LOG_LEVEL": "warning",
            **RAISED_LIMITS,
        }
        for i in range(self.nodes):
            self.add_node(i)

    def add_node(self, i: int) -> ServerProcess:
        env = {**self.env, "CHATD_SERVER_NODE_ID": f"bench-{i + 1}"}
        server = ServerProcess(
            env, cwd=self.workdir / f"node{i + 1}", log_path=self.workdir / f"node{i + 1}.log"
        )
        server.start()
        self._stack.append(server)
        self.servers.append(server)
        self.groups[f"node{i + 1}"] = lambda s=server: [s.pid]  # type: ignore[misc]
        if i < self.nodes:
            self.urls.append(server.ws_url)
        return server

    def remove_node(self, server: ServerProcess) -> None:
        server.stop()
        index = self.servers.index(server)
        self.groups.pop(f"node{index + 1}", None)

    def counters(self) -> dict[str, float]:
        """Sums over the fan-out nodes of the /metrics counters that explain latency."""
        out: dict[str, float] = dict.fromkeys(METRICS, 0.0)
        for server in self.servers[: self.nodes]:
            try:
                with urllib.request.urlopen(server.base_url + "/metrics", timeout=5) as r:
                    text = r.read().decode()
            except OSError:
                continue
            for line in text.splitlines():
                name, _, value = line.partition(" ")
                if name in out:
                    out[name] += float(value)
        return out

    def register(self, count: int) -> list[Account]:
        """Accounts made through POST /api/register, spread over the nodes."""
        run = uuid.uuid4().hex[:6]
        bases = [s.base_url for s in self.servers[: self.nodes]]

        def one(n: int) -> Account:
            body = json.dumps(
                {
                    "username": f"b{run}_{n}",
                    "password": "bench-password-1",
                    "email": f"b{run}_{n}@example.org",
                    "birthdate": "1990-01-01",
                }
            ).encode()
            req = urllib.request.Request(
                bases[n % len(bases)] + "/api/register",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=REGISTER_TIMEOUT_S) as resp:
                got = json.loads(resp.read())
            return Account(got["user"]["id"], got["user"]["username"], got["token"])

        with concurrent.futures.ThreadPoolExecutor(REGISTER_CONCURRENCY) as pool:
            made = list(pool.map(one, range(count)))
        self.accounts.extend(made)
        return made


class WebsocketsCeiling(Deployment):
    name = "websockets (ceiling)"
    kind = "ws"
    nodes = 1

    def start(self) -> None:
        port = free_port()
        proc = Proc(
            [str(PEERS_PYTHON), str(BENCH / "peers" / "ws_fanout.py"), str(port)],
            port=port,
            log_path=self.workdir / "ws.log",
        )
        proc.start()
        self._stack.append(proc)
        self.groups["server"] = lambda: [proc.pid]
        self.urls = [f"ws://127.0.0.1:{port}/"]


class SocketIONode(Deployment):
    name = "Socket.IO 4 (Node) + redis-adapter"
    kind = "sio"
    nodes = 2

    def start(self) -> None:
        redis = self._redis()
        for i in range(self.nodes):
            port = free_port()
            proc = Proc(
                ["node", str(BENCH / "peers" / "sio_server.js"), str(port), redis.url],
                port=port,
                log_path=self.workdir / f"sio{i + 1}.log",
                cwd=BENCH,
            )
            proc.start()
            self._stack.append(proc)
            self.groups[f"node{i + 1}"] = lambda p=proc: [p.pid]  # type: ignore[misc]
            self.urls.append(f"ws://127.0.0.1:{port}")


class PythonSocketIO(Deployment):
    name = "python-socketio + AsyncRedisManager"
    kind = "sio"
    nodes = 2

    def start(self) -> None:
        redis = self._redis()
        for i in range(self.nodes):
            port = free_port()
            proc = Proc(
                [
                    str(PEERS_PYTHON),
                    "-m",
                    "uvicorn",
                    "sio_py:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    # The same WebSocket stack and settings as chatd's nodes.
                    "--ws",
                    "websockets-sansio",
                    "--ws-per-message-deflate",
                    "false",
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                port=port,
                log_path=self.workdir / f"psio{i + 1}.log",
                cwd=BENCH / "peers",
                env={"BENCH_REDIS_URL": redis.url},
            )
            proc.start()
            self._stack.append(proc)
            self.groups[f"node{i + 1}"] = lambda p=proc: [p.pid]  # type: ignore[misc]
            self.urls.append(f"ws://127.0.0.1:{port}")


class BareStarlette(Deployment):
    """Idle baseline: Starlette under uvicorn with one of uvicorn's WebSocket stacks."""

    kind = "ws"
    nodes = 1
    ws_impl = "websockets-sansio"

    def __init__(self, workdir: Path, ws_impl: str = "websockets-sansio") -> None:
        super().__init__(workdir)
        self.ws_impl = ws_impl
        self.name = f"bare Starlette/uvicorn, --ws {ws_impl}"

    def start(self) -> None:
        port = free_port()
        proc = Proc(
            [
                str(PEERS_PYTHON),
                "-m",
                "uvicorn",
                "starlette_idle:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--ws",
                self.ws_impl,
                "--ws-per-message-deflate",
                "false",
                "--loop",
                "asyncio",
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            port=port,
            log_path=self.workdir / f"starlette-{self.ws_impl}.log",
            cwd=BENCH / "peers",
        )
        proc.start()
        self._stack.append(proc)
        self.groups["server"] = lambda: [proc.pid]
        self.urls = [f"ws://127.0.0.1:{port}/ws"]


PEERS: dict[str, type[Deployment]] = {
    "websockets": WebsocketsCeiling,
    "socketio-node": SocketIONode,
    "python-socketio": PythonSocketIO,
}

if __name__ == "__main__":  # pragma: no cover - a smoke start of one system
    sys.exit("use bench/run.py")
