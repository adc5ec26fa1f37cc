"""Messages per second through one chatd node on its embedded defaults (SQLite, memory
broker): a first figure for the chat core. Print-only; bounded in time; loopback only.

    .venv/bin/python bench/one_node.py [--senders 20] [--messages 500] [--listeners 20]

Starts a node in a temporary directory with the send limits raised through CHATD_*
overrides, puts every client in one room, has each sender keep a window of sends in
flight, and reports committed messages/s (acks) and deliveries/s (msg frames received).
The generator is the Python client on the same machine: its CPU is shown beside the
node's, and a generator near 100% means the figure is the generator's, not chatd's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chatd.client import ChatClient, api  # noqa: E402

# Seconds the whole run may take before it gives up.
RUN_TIMEOUT_S = 300.0
# Seconds to wait for the node to answer /healthz.
START_TIMEOUT_S = 30.0
# Sends each sender keeps awaiting their ack at once.
WINDOW = 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def make_accounts(base: str, work: Path, n: int) -> list[str]:
    """Accounts through the store directly: argon2 would make setup the slow part."""
    from chatd import auth
    from persistence.database import Database
    from persistence.sessions import SessionStore
    from persistence.users import UserStore

    db = await Database.connect(f"sqlite+aiosqlite:///{work / 'chatd.db'}")
    users, sessions = UserStore(db), SessionStore(db)
    tokens = []
    import datetime

    for i in range(n):
        name = f"bench{i}_{uuid.uuid4().hex[:6]}"
        user = await users.create(
            username=name,
            username_key=name,
            email=f"{name}@example.org",
            email_key=f"{name}@example.org",
            password_hash="not-a-hash",
            birthdate=datetime.date(1990, 1, 1),
            created=int(time.time() * 1000),
        )
        token = auth.new_token()
        await sessions.create(
            user_id=user.id,
            token_hash=auth.token_hash(token),
            created=int(time.time() * 1000),
            device="bench",
            address="127.0.0.1",
            user_agent="bench",
        )
        tokens.append(token)
    await db.close()
    return tokens


def start_node() -> tuple[subprocess.Popen[bytes], int, Path]:
    """A node in a temporary directory, with the send limits raised; waits for /healthz."""
    work = Path(tempfile.mkdtemp(prefix="chatd-bench-"))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CHATD_")},
        "CHATD_LIMITS_SEND_RATE": "100000",
        "CHATD_LIMITS_SEND_BURST": "100000",
        "CHATD_LOG_LEVEL": "warning",
        "PYTHONPATH": str(ROOT),
    }
    with open(work / "node.log", "wb") as log:
        node = subprocess.Popen(
            [sys.executable, "-m", "chatd", "serve", "--port", str(port)],
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
            return node, port, work
        except OSError:
            if time.monotonic() > deadline or node.poll() is not None:
                node.kill()
                raise SystemExit(f"the node did not start; see {work / 'node.log'}") from None
            time.sleep(0.1)


async def run(
    args: argparse.Namespace, node: subprocess.Popen[bytes], port: int, work: Path
) -> None:
    base, ws = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"
    total = args.senders + args.listeners
    tokens = await make_accounts(base, work, total)
    clients = [await ChatClient.connect(ws, t) for t in tokens]
    room = f"bench-{uuid.uuid4().hex[:6]}"
    conv = 0
    for c in clients:
        conv = int((await c.request({"t": "room.join", "room": room}))["conv"])
    expected = args.senders * args.messages
    got = [0] * len(clients)
    done = asyncio.Event()

    async def listen(i: int, c: ChatClient) -> None:
        while got[i] < expected:
            frame = await c.pushes.get()
            if frame.get("t") == "msg":
                got[i] += 1
        if all(g >= expected for g in got):
            done.set()

    async def send(c: ChatClient) -> None:
        window = asyncio.Semaphore(WINDOW)

        async def one(k: int) -> None:
            async with window:
                await c.send(conv, f"{k:06d} " + "x" * 90)

        await asyncio.gather(*(one(k) for k in range(args.messages)))

    listeners = [asyncio.create_task(listen(i, c)) for i, c in enumerate(clients)]
    node_cpu0, me_cpu0 = cpu_seconds(node.pid), time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(send(c) for c in clients[: args.senders]))
    acked = time.perf_counter() - started
    await asyncio.wait_for(done.wait(), RUN_TIMEOUT_S)
    delivered = time.perf_counter() - started
    node_cpu = cpu_seconds(node.pid) - node_cpu0
    me_cpu = time.process_time() - me_cpu0
    for t in listeners:
        t.cancel()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    print(f"one node, SQLite (WAL, synchronous=FULL), memory broker; {total} clients, one room")
    print(f"committed: {expected} messages in {acked:.2f} s = {expected / acked:,.0f} msg/s")
    deliveries = expected * len(clients)
    print(
        f"delivered: {deliveries} msg frames in {delivered:.2f} s = "
        f"{deliveries / delivered:,.0f} deliveries/s"
    )
    print(
        f"CPU: node {node_cpu / delivered:.0%} of a core, "
        f"generator {me_cpu / delivered:.0%} of a core"
    )
    _, raw = await api(base, "GET", "/metrics")
    metrics = raw.decode() if isinstance(raw, bytes) else str(raw)
    sums = {
        ln.split()[0]: float(ln.split()[1])
        for ln in metrics.splitlines()
        if ln.startswith("chatd_send_commit_seconds_")
    }
    count = sums.get("chatd_send_commit_seconds_count", 0.0)
    if count:
        mean = sums["chatd_send_commit_seconds_sum"] / count * 1000
        print(f"send to commit, in the node: mean {mean:.1f} ms over {count:.0f} sends")
    for c in clients:
        await c.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--senders", type=int, default=20)
    p.add_argument("--messages", type=int, default=500, help="per sender")
    p.add_argument("--listeners", type=int, default=20)
    args = p.parse_args()
    node, port, work = start_node()
    try:
        asyncio.run(asyncio.wait_for(run(args, node, port, work), RUN_TIMEOUT_S))
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(15)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()


if __name__ == "__main__":
    main()
