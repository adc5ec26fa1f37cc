"""Private Redis servers for the tests: one node, or a three-master Redis Cluster.

Each server listens on a free port on 127.0.0.1 only, keeps nothing on disk, and is a
direct child of the test process, so a test can stop, kill and restart it on the same
port (clients then see the outage a real restart causes).
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from .ports import LOOPBACK, free_port
from .procs import KILL_TIMEOUT, STOP_TIMEOUT, log_tail, reap, send_signal, spawn, stop_process

START_TIMEOUT = 20.0
"""Seconds for a redis-server to answer PING."""

CLUSTER_TIMEOUT = 60.0
"""Seconds for a new cluster to report cluster_state:ok on every node."""

PING_TIMEOUT = 1.0
"""Seconds for one PING (or other admin command) while waiting on a server."""

START_ATTEMPTS = 3
"""First starts tried on fresh ports, when another process took the port meanwhile."""

CLUSTER_NODE_TIMEOUT_MS = 5000
"""cluster-node-timeout, in milliseconds: how long a silent node takes to be failed."""

INSTALL_HINT = (
    "redis-server not found: install it (Debian: `apt-get install redis-server`), "
    "or set CHATD_TEST_REDIS_SERVER to its path"
)


def find_redis_server() -> str:
    """The redis-server binary; raises RuntimeError saying what to install."""
    override = os.environ.get("CHATD_TEST_REDIS_SERVER")
    found = override or shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(found).exists():
        raise RuntimeError(INSTALL_HINT)
    return found


def find_redis_cli() -> str:
    """The redis-cli binary (to create a cluster); raises RuntimeError if missing."""
    found = shutil.which("redis-cli") or "/usr/bin/redis-cli"
    if not Path(found).exists():
        raise RuntimeError(
            "redis-cli not found: install it (Debian: `apt-get install redis-tools`)"
        )
    return found


class PrivateRedis:
    """One redis-server of our own. `start()`, `stop()`, `kill()`, `restart()`, `url`."""

    def __init__(
        self,
        *,
        port: int | None = None,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binary = find_redis_server()
        self.base_dir = Path(tempfile.mkdtemp(prefix="chatd-redis-"))
        self.log_path = log_path if log_path is not None else self.base_dir / "redis.log"
        self.port = port
        self.extra_args = list(extra_args)
        self._proc: Any = None  # subprocess.Popen while it runs

    @property
    def url(self) -> str:
        """redis://127.0.0.1:PORT, as chatd takes it for broker.url."""
        return f"redis://{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        assert self._proc is not None, "redis-server is not running"
        pid: int = self._proc.pid
        return pid

    def client(self) -> redis.Redis:
        """A synchronous redis-py client, for tests that look into Redis."""
        return redis.Redis(
            host=LOOPBACK,
            port=self.port or 0,
            socket_timeout=PING_TIMEOUT,
            socket_connect_timeout=PING_TIMEOUT,
        )

    def command(self, *args: Any) -> Any:
        """Run one command on a short-lived connection and return the reply."""
        with self.client() as conn:
            return conn.execute_command(*args)

    def flushall(self) -> None:
        self.command("FLUSHALL")

    def _argv(self, port: int) -> list[str]:
        return [
            self.binary,
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.base_dir),
            "--daemonize",
            "no",
            *self.extra_args,
        ]

    def _answers(self) -> bool:
        try:
            return bool(self.command("PING"))
        except (redis.ConnectionError, redis.TimeoutError, ConnectionError):
            return False
        except redis.ResponseError as exc:  # LOADING and the like: up, not ready
            return "LOADING" not in str(exc)

    def start(self) -> None:
        """Start the server (on a fresh port the first time) and wait for PING."""
        if self.running:
            return
        fresh_port = self.port is None
        attempts = START_ATTEMPTS if fresh_port else 1
        for attempt in range(attempts):
            if fresh_port:
                self.port = free_port()
            assert self.port is not None
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._proc = spawn(self._argv(self.port), log_path=self.log_path, cwd=self.base_dir)
            deadline = time.monotonic() + START_TIMEOUT
            while not self._answers():
                if self._proc.poll() is not None:
                    break
                if time.monotonic() >= deadline:
                    self.kill()
                    raise RuntimeError(
                        f"redis-server did not answer on port {self.port} within "
                        f"{START_TIMEOUT}s; log {self.log_path}:\n{log_tail(self.log_path)}"
                    )
                time.sleep(0.02)
            else:
                return
            code = self._proc.returncode
            self._proc = None
            with open(self.log_path, errors="replace") as log:
                log.seek(offset)
                this_start = log.read()
            if "Address already in use" in this_start and attempt + 1 < attempts:
                continue
            raise RuntimeError(
                f"redis-server exited with code {code} at start; log {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            )

    def stop(self) -> None:
        """SIGTERM (SIGKILL after a deadline) and reap."""
        if self._proc is not None:
            proc, self._proc = self._proc, None
            stop_process(proc, signal.SIGTERM, STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL, as a crash, and reap."""
        if self._proc is not None:
            proc, self._proc = self._proc, None
            send_signal(proc.pid, signal.SIGKILL)
            reap(proc, KILL_TIMEOUT)

    def restart(self) -> None:
        """Stop, then start again on the same port."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and delete its files."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


def _cluster_info(node: PrivateRedis) -> dict[str, str]:
    reply = node.command("CLUSTER INFO")
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


class PrivateRedisCluster:
    """A Redis Cluster of `size` masters and no replicas, all on 127.0.0.1.

    `url` is redis+cluster://127.0.0.1:PORT of the first node; `nodes` are the servers,
    each of which can be stopped, killed and restarted on its own.
    """

    def __init__(self, size: int = 3, *, log_dir: Path | None = None) -> None:
        self.nodes: list[PrivateRedis] = []
        for index in range(size):
            log_path = log_dir / f"redis-cluster-{index}.log" if log_dir else None
            node = PrivateRedis(port=free_port(), log_path=log_path)
            node.extra_args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(node.base_dir / "nodes.conf"),
                "--cluster-node-timeout",
                str(CLUSTER_NODE_TIMEOUT_MS),
                # The bus port too is a free one, not port + 10000.
                "--cluster-port",
                str(free_port()),
            ]
            self.nodes.append(node)
        self._created = False

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes if node.port is not None]

    @property
    def url(self) -> str:
        return f"redis+cluster://{LOOPBACK}:{self.ports[0]}"

    def _healthy(self) -> bool:
        want = str(len(self.nodes))
        for node in self.nodes:
            try:
                info = _cluster_info(node)
            except (redis.ConnectionError, redis.TimeoutError, ConnectionError):
                return False
            if (
                info.get("cluster_state") != "ok"
                or info.get("cluster_known_nodes") != want
                or info.get("cluster_slots_ok") != "16384"
            ):
                return False
        return True

    def start(self) -> None:
        """Start every node, form the cluster the first time, wait until it is ok."""
        for node in self.nodes:
            node.start()
        if not self._created:
            addresses = [f"{LOOPBACK}:{port}" for port in self.ports]
            result = subprocess.run(
                [
                    find_redis_cli(),
                    "--cluster",
                    "create",
                    *addresses,
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=CLUSTER_TIMEOUT,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"redis-cli --cluster create failed:\n{result.stdout}{result.stderr}"
                )
            self._created = True
        self.wait_healthy()

    def wait_healthy(self, timeout: float = CLUSTER_TIMEOUT) -> None:
        """Wait until every node reports cluster_state:ok with all slots covered."""
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if time.monotonic() >= deadline:
                states = {}
                for node in self.nodes:
                    try:
                        states[node.port] = _cluster_info(node).get("cluster_state")
                    except (redis.ConnectionError, redis.TimeoutError, ConnectionError):
                        states[node.port] = "down"
                raise RuntimeError(f"Redis Cluster not ok after {timeout}s: {states}")
            time.sleep(0.05)

    def flushall(self) -> None:
        for node in self.nodes:
            node.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def close(self) -> None:
        for node in self.nodes:
            node.close()
