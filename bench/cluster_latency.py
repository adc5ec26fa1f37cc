"""Cross-node delivery latency of two chatd nodes, and recovery after a Redis restart.

Starts a private PostgreSQL and a private redis-server in a temporary directory (the
test harness's classes, tests/support), two chatd nodes on them, and a DM between a
member on node 1 and one on node 2. Prints only; stops everything it started.

    .venv/bin/python bench/cluster_latency.py [--kind dm|room] [--rate 200] [--seconds 10]
                                              [--outage 1.5]

--kind room has the two members talk in a room instead of a DM (same path across nodes,
without the DM's per-send block check).
Phase 1: node 1's member sends at --rate for --seconds; latency is from the send time
written in each text to the arrival at node 2's member (one process, one clock).
Phase 2: the same stream, with Redis killed after a third of it and started again
--outage seconds later; it prints the time from Redis answering again to both nodes'
brokers being back and to node 2's member holding every message sent until then. That
member does what a client does: on a `conv` push (a gap too long to replay) it syncs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from chatd.client import ChatClient, api, register  # noqa: E402
from tests.support.postgres import PrivatePostgres  # noqa: E402
from tests.support.redis import PrivateRedis  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

# Seconds the whole run may take before it gives up (it then still stops everything).
RUN_TIMEOUT_S = 300.0
# Seconds to wait for the last messages of a phase to arrive.
DRAIN_TIMEOUT_S = 60.0
# Seconds between two looks at the brokers' state in /readyz.
POLL_S = 0.02
# Budgets out of the way: the stream is what is measured, not the limits.
NODE_SETTINGS = {
    "CHATD_LIMITS_SEND_RATE": "1000000",
    "CHATD_LIMITS_SEND_BURST": "1000000",
    "CHATD_LIMITS_REGISTER_PER_ADDRESS_PER_HOUR": "1000000",
    "CHATD_LOG_LEVEL": "warning",
}


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


@dataclass
class Receiver:
    """Node 2's member: timestamps every msg as it arrives, syncs on a `conv` push."""

    client: ChatClient
    conv: int
    arrived: dict[int, float] = field(default_factory=dict)  # seq -> time.time()
    sent_ns: dict[int, int] = field(default_factory=dict)  # seq -> send time in the text
    live: int = 0
    synced: int = 0
    conv_pushes: int = 0
    contiguous: int = 0
    task: asyncio.Task[None] | None = None

    def _take(self, frame: dict[str, Any], live: bool) -> None:
        seq = frame["seq"]
        if seq in self.arrived:
            return
        self.arrived[seq] = time.time()
        self.sent_ns[seq] = int(frame["text"].rsplit(" ", 1)[1])
        if live:
            self.live += 1
        else:
            self.synced += 1
        while self.contiguous + 1 in self.arrived:
            self.contiguous += 1

    async def run(self) -> None:
        while True:
            frame = await self.client.pushes.get()
            if frame.get("conv") != self.conv:
                continue
            if frame.get("t") == "msg":
                self._take(frame, live=True)
            elif frame.get("t") == "conv" and frame.get("last_seq", 0) > self.contiguous:
                self.conv_pushes += 1
                for m in await self.client.sync_all(self.conv, after=self.contiguous):
                    self._take(m, live=False)

    async def wait_for(self, seq: int, timeout: float = DRAIN_TIMEOUT_S) -> float | None:
        """The time (time.time()) at which it held every message through seq."""
        deadline = time.monotonic() + timeout
        while self.contiguous < seq:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.001)  # polling a counter in this process
        return max(self.arrived[s] for s in range(1, seq + 1))


@dataclass
class Sender:
    client: ChatClient
    conv: int
    acks: dict[int, float] = field(default_factory=dict)  # seq -> ack latency in s
    sent: int = 0
    failed: int = 0

    async def stream(self, rate: float, seconds: float, tag: str) -> float:
        """Sends at rate for seconds without waiting for acks; returns the achieved rate."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        pending = []
        i = 0
        while (now := loop.time()) < start + seconds:
            due = start + i / rate
            if due > now:
                await asyncio.sleep(due - now)  # pacing the sender
            pending.append(loop.create_task(self._one(f"{tag}-{i}")))
            i += 1
        elapsed = loop.time() - start
        await asyncio.gather(*pending)
        self.sent += i
        return i / elapsed

    async def _one(self, cmid: str) -> None:
        sent = time.time()
        text = f"bench {cmid} {time.time_ns()}"
        try:
            reply = await self.client.request(
                {"t": "send", "conv": self.conv, "text": text, "cmid": cmid},
                timeout=DRAIN_TIMEOUT_S,
                raise_error=False,
            )
        except Exception:
            self.failed += 1
            return
        if reply.get("t") == "ack":
            self.acks[reply["seq"]] = time.time() - sent
        else:
            self.failed += 1


async def broker_connected(node: ServerProcess) -> bool:
    status, body = await api(node.base_url, "GET", "/readyz")
    return status == 200 and bool(body.get("broker"))


async def metrics(node: ServerProcess, names: tuple[str, ...]) -> dict[str, float]:
    def fetch() -> str:
        with urllib.request.urlopen(node.base_url + "/metrics", timeout=5) as r:
            return str(r.read().decode())

    out = {}
    for line in (await asyncio.to_thread(fetch)).splitlines():
        for name in names:
            if line.startswith(name + " ") or line.startswith(name + "_total "):
                out[name] = float(line.split()[-1])
    return out


async def measure(
    nodes: list[ServerProcess], redis: PrivateRedis, args: argparse.Namespace
) -> None:
    node1, node2 = nodes
    stamp = int(time.time())
    a = await register(node1.base_url, f"benchA{stamp}")
    b = await register(node2.base_url, f"benchB{stamp}")
    alice = await ChatClient.connect(node1.ws_url, a["token"])
    bob = await ChatClient.connect(node2.ws_url, b["token"])
    try:
        if args.kind == "dm":
            conv = int((await alice.request({"t": "dm.open", "user": b["user"]["id"]}))["conv"])
        else:
            room = f"bench room {stamp}"
            conv = int((await alice.request({"t": "room.join", "room": room}))["conv"])
            await bob.request({"t": "room.join", "room": room})
        recv = Receiver(bob, conv)
        recv.task = asyncio.get_running_loop().create_task(recv.run())
        send = Sender(alice, conv)

        # Phase 1: steady stream.
        rate = await send.stream(args.rate, args.seconds, "p1")
        last = max(send.acks)
        if await recv.wait_for(last) is None:
            print(f"  node 2's member did not get every message within {DRAIN_TIMEOUT_S}s")
        lat = [recv.arrived[s] - recv.sent_ns[s] / 1e9 for s in range(1, last + 1)]
        acks = list(send.acks.values())
        print(
            f"phase 1: cross-node {args.kind}, node 1 -> node 2, {args.rate:g} msg/s asked for "
            f"{args.seconds:g} s: {send.sent} sent ({rate:.0f} msg/s), {len(acks)} acked, "
            f"{send.failed} failed"
        )
        print(
            f"  delivery latency, send -> other node's client: p50 {ms(pct(lat, 50))}, "
            f"p99 {ms(pct(lat, 99))}, max {ms(max(lat))}  (mean {ms(statistics.mean(lat))})"
        )
        print(f"  ack latency at the sender: p50 {ms(pct(acks, 50))}, p99 {ms(pct(acks, 99))}")
        if pct(acks, 50) > 1.0:
            print("  (acks lag by seconds: node 1 does not keep up with this rate; the figures")
            print("   above are queueing, not delivery)")
        before = await metrics(node2, ("chatd_gap_fills", "chatd_messages_filled"))

        # Phase 2: the same stream, with a Redis restart in it.
        send.acks.clear()
        first = last + 1
        stream = asyncio.get_running_loop().create_task(send.stream(args.rate, args.seconds, "p2"))
        await asyncio.sleep(args.seconds / 3)  # into the stream
        redis.kill()
        down_at = time.time()
        await asyncio.sleep(args.outage)  # the outage
        await asyncio.to_thread(redis.start)  # returns once redis-server answers PING
        back_at = time.time()
        back_seq = max(send.acks) if send.acks else first - 1
        reconnected: dict[str, float] = {}
        while len(reconnected) < 2 and time.time() - back_at < DRAIN_TIMEOUT_S:
            for name, node in (("node1", node1), ("node2", node2)):
                if name not in reconnected and await broker_connected(node):
                    reconnected[name] = time.time() - back_at
            await asyncio.sleep(POLL_S)
        filled_at = await recv.wait_for(back_seq)
        await stream
        last2 = max(send.acks)
        done_at = await recv.wait_for(last2)
        during = range(first, back_seq + 1)
        lat2 = [recv.arrived[s] - recv.sent_ns[s] / 1e9 for s in during if s in recv.arrived]
        after = await metrics(
            node2, ("chatd_gap_fills", "chatd_messages_filled", "chatd_broker_reconnects")
        )
        print(
            f"phase 2: same stream, Redis killed {args.seconds / 3:.1f} s in, started again "
            f"{back_at - down_at:.2f} s later; {send.sent} sent in all, {send.failed} failed"
        )
        print(
            "  Redis back -> broker reconnected: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(reconnected.items()))
        )
        if filled_at is None:
            print(
                f"  node 2's member still missed messages {DRAIN_TIMEOUT_S}s after Redis came back"
            )
        else:
            print(
                f"  Redis back -> last gap filled (node 2's member holds every message through "
                f"seq {back_seq}, the last acked when Redis came back): "
                f"{max(0.0, filled_at - back_at):.2f} s"
            )
        if done_at is not None:
            print(f"  every phase-2 message ({last2 - first + 1}) held: yes, none twice")
        print(
            f"  messages sent before Redis came back: latency p50 {ms(pct(lat2, 50))}, "
            f"max {ms(max(lat2))}; node 2's member: {recv.conv_pushes} conv push(es), "
            f"{recv.synced} messages by sync, {recv.live} live"
        )
        print(
            "  node 2 metrics: gap fills "
            f"{after.get('chatd_gap_fills', 0) - before.get('chatd_gap_fills', 0):.0f}, "
            "messages filled "
            f"{after.get('chatd_messages_filled', 0) - before.get('chatd_messages_filled', 0):.0f}"
            f", broker reconnects {after.get('chatd_broker_reconnects', 0):.0f}"
        )
        recv.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recv.task
    finally:
        await alice.close()
        await bob.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("dm", "room"), default="dm", help="where to talk")
    parser.add_argument("--rate", type=float, default=200.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--outage", type=float, default=1.5, help="seconds Redis stays down")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="chatd-bench-cluster-"))
    print(
        f"chatd cluster latency on {socket.gethostname()}: {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}; PostgreSQL and Redis private, loopback; logs in {base}"
    )
    pg = PrivatePostgres(log_path=base / "postgres.log")
    redis = PrivateRedis(log_path=base / "redis.log")
    nodes: list[ServerProcess] = []
    try:
        pg.start()
        pg.create_database("bench")
        redis.start()
        env = {
            "CHATD_DATABASE_URL": pg.url("bench"),
            "CHATD_BROKER_URL": redis.url,
            **NODE_SETTINGS,
        }
        for i in (1, 2):
            node = ServerProcess(env, cwd=base / f"node{i}", log_path=base / f"node{i}.log")
            nodes.append(node)
            node.start()
        asyncio.run(asyncio.wait_for(measure(nodes, redis, args), RUN_TIMEOUT_S))
    finally:
        for node in nodes:
            node.stop()
        redis.close()
        pg.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
