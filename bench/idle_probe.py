"""Where an idle connection's memory goes: one node in this process, N idle authenticated
connections, and tracemalloc's per-connection bytes by allocating line. Print-only;
bounded in time; loopback only.

    .venv/bin/python bench/idle_probe.py [--connections 2000] [--top 25]

The node runs on its embedded defaults (SQLite in a temporary directory, the memory
broker) on uvloop, as `python -m chatd serve` does; the clients are raw sockets in the
same loop that send the handshake and the auth frame and then only count bytes, so that
next to nothing of theirs is in the figures (their own allocations are filtered out by
file). All connections share one account: the per-user structures (the user's channel)
are counted once, so the figure is a connection's, not an account's. RSS is printed too,
but in-process it includes the clients' sockets; bench/run.py's `idle` section is the
figure to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import socket
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Seconds the whole probe may take.
RUN_TIMEOUT_S = 240.0
# Seconds to wait for the node to listen.
START_TIMEOUT_S = 30.0
# Connections opened at once while connecting.
CONNECT_BATCH = 100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class _Idle(asyncio.Protocol):
    """A client that authenticates and then only waits for `ready`."""

    def __init__(self, token: str, ready: asyncio.Event, counter: list[int]) -> None:
        self.token = token
        self.ready = ready
        self.counter = counter
        self.seen = b""
        self.done = False
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:  # uvloop's is no asyncio.Transport
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chatd.v1.json\r\n\r\n"
            ).encode()
        )
        self.upgraded = False

    def _auth(self) -> None:
        payload = json.dumps({"t": "auth", "token": self.token}).encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert len(payload) < 126
        self.transport.write(bytes((0x81, 0x80 | len(payload))) + mask + masked)

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        self.seen = (self.seen + data)[-4096:]
        if not self.upgraded and b"\r\n\r\n" in self.seen:
            self.upgraded = True  # the auth goes after the 101, not with the request
            self._auth()
        if b'"t":"ready"' in self.seen:
            self.done = True
            self.seen = b""
            self.counter[0] += 1
            self.ready.set()


async def _probe(args: argparse.Namespace, work: Path) -> None:
    os.environ.update(
        {
            "CHATD_DATABASE_URL": f"sqlite+aiosqlite:///{work / 'chatd.db'}",
            "CHATD_SERVER_HOST": "127.0.0.1",
            "CHATD_SERVER_PORT": str(args.port),
            "CHATD_LOG_LEVEL": "warning",
        }
    )
    from chatd import config as chatd_config
    from chatd.client import register
    from chatd.serve import run

    config = chatd_config.load(environ=os.environ, cwd=work)
    loop = asyncio.get_running_loop()
    server = loop.create_task(run(config))
    base = f"http://127.0.0.1:{args.port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", args.port)
            writer.close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("the node did not listen") from None
            await asyncio.sleep(0.1)
    token = (await register(base, "probe"))["token"]

    gc.collect()
    tracemalloc.start(args.frames)
    before = tracemalloc.take_snapshot()
    rss_before = _rss_kib()
    counter = [0]
    ready = asyncio.Event()
    transports: list[asyncio.BaseTransport] = []
    for start in range(0, args.connections, CONNECT_BATCH):
        n = min(CONNECT_BATCH, args.connections - start)
        made = await asyncio.gather(
            *(
                loop.create_connection(lambda: _Idle(token, ready, counter), "127.0.0.1", args.port)
                for _ in range(n)
            )
        )
        transports.extend(t for t, _ in made)
        want = start + n
        while counter[0] < want:
            ready.clear()
            await asyncio.wait_for(ready.wait(), 30)
    await asyncio.sleep(1.0)  # let the handshakes' leftovers go
    gc.collect()
    after = tracemalloc.take_snapshot()
    rss_after = _rss_kib()
    mine = tracemalloc.Filter(False, __file__, all_frames=True)
    stats = after.filter_traces([mine]).compare_to(before.filter_traces([mine]), args.group)
    n = args.connections
    total = sum(s.size_diff for s in stats)
    print(f"{n} idle authenticated connections, one account, uvloop, SQLite, memory broker")
    print(f"traced Python bytes per connection (the node's only): {total / n / 1024:.1f} KiB")
    print(f"process RSS per connection (node + clients): {(rss_after - rss_before) / n:.1f} KiB")
    print()
    print("| bytes per connection | count per connection | where |")
    print("| --- | --- | --- |")
    for s in stats[: args.top]:
        frame = s.traceback[0]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        if args.frames > 1:
            where = " <- ".join(
                f"{Path(f.filename).name}:{f.lineno}" for f in list(s.traceback)[: args.frames]
            )
        print(f"| {s.size_diff / n:,.0f} | {s.count_diff / n:.1f} | {where} |")
    for t in transports:
        t.close()
    server.cancel()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--connections", type=int, default=2000)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--frames", type=int, default=1, help="traceback depth per line")
    p.add_argument("--group", default="lineno", choices=["lineno", "filename", "traceback"])
    args = p.parse_args()
    args.port = _free_port()
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.connections * 2 + 100 > hard:
        print(f"the descriptor limit ({hard}) is too low for {args.connections}", file=sys.stderr)
        return 2
    import uvloop

    with tempfile.TemporaryDirectory(prefix="chatd-idle-") as tmp:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(asyncio.wait_for(_probe(args, Path(tmp)), RUN_TIMEOUT_S))
    return 0


if __name__ == "__main__":
    sys.exit(main())
