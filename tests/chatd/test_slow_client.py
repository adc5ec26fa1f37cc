"""A client that stops reading is cut off (4009) and slows nobody else (PROTOCOL.md
section 5, DESIGN.md: bounded send buffers)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from chatkit import Kit, join_room, pack
from support.server import ServerProcess
from support.wait import async_wait_until

from chatd.client import api

SEND_BUFFER_FRAMES = 64  # limits.send_buffer_frames on this test's node
# Bytes of receive buffer the stalled client asks for (the kernel may round it up).
STALLED_RCVBUF = 4096
# Messages sent while the stalled client is in the room: far more bytes than the kernel's
# socket buffers, uvicorn's write buffer and 64 frames of ours hold together (about 5 MB).
MESSAGES = 600
# With its number in front, 4000 code points and about 12,000 bytes: the largest there is.
TEXT = "€" * 3993
IN_FLIGHT = 16  # sends the busy member keeps awaiting their ack at once
# Seconds from a message's ack to its arrival at a member who reads: "in time".
DELIVERY_BOUND_S = 5.0
# Seconds for the whole stream.
STREAM_TIMEOUT_S = 120.0
# Seconds of silence after which the stalled client, reading again, calls the line open.
DRAIN_TIMEOUT_S = 10.0
# Seconds the node may take to let go of a connection it closed 4009 (ws.ABORT_GRACE_S is 2).
RELEASE_TIMEOUT_S = 10.0
OP_BINARY, OP_CLOSE = 0x2, 0x8


class StalledClient:
    """A WebSocket client written by hand on a socket with a tiny receive buffer, so that
    when it stops reading the server's writes back up at once."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    @classmethod
    async def connect(cls, port: int, token: str) -> StalledClient:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        client = cls(sock)
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(
            sock,
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chatd.v1.msgpack\r\n\r\n"
            ).encode(),
        )
        while b"\r\n\r\n" not in client.buf:
            client.buf += await client._recv()
        head, client.buf = client.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        await client.send({"t": "auth", "token": token, "rid": 1})
        ready = await client.reply(1)
        assert ready["t"] == "ready", ready
        return client

    async def _recv(self) -> bytes:
        data = await asyncio.wait_for(
            asyncio.get_running_loop().sock_recv(self.sock, 65536), DRAIN_TIMEOUT_S
        )
        if not data:
            raise EOFError
        return data

    async def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += await self._recv()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    async def send(self, frame: dict[str, Any]) -> None:
        payload = pack(frame)
        n = len(payload)
        if n < 126:
            head = bytes([0x80 | OP_BINARY, 0x80 | n])
        elif n < 65536:
            head = bytes([0x80 | OP_BINARY, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head = bytes([0x80 | OP_BINARY, 0x80 | 127]) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await asyncio.get_running_loop().sock_sendall(self.sock, head + mask + masked)

    async def frame(self) -> tuple[int, bytes]:
        """The next (opcode, payload) from the server (whose frames are not masked)."""
        b0, b1 = await self._exactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await self._exactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await self._exactly(8), "big")
        return b0 & 0x0F, await self._exactly(n)

    async def reply(self, rid: Any) -> dict[str, Any]:
        while True:
            opcode, payload = await self.frame()
            assert opcode == OP_BINARY, (opcode, payload)
            frame: dict[str, Any] = msgpack.unpackb(payload)
            if frame.get("rid") == rid:
                return frame

    async def read_to_the_end(self) -> tuple[int, int | str]:
        """Reads all that is left: (msg frames read, the close code, "dropped" when the TCP
        connection ended without one, or "open" when it went quiet without ending)."""
        msgs = 0
        try:
            while True:
                opcode, payload = await self.frame()
                if opcode == OP_CLOSE:
                    return msgs, int.from_bytes(payload[:2], "big")
                if opcode == OP_BINARY and msgpack.unpackb(payload).get("t") == "msg":
                    msgs += 1
        except (EOFError, ConnectionResetError):
            return msgs, "dropped"
        except TimeoutError:
            return msgs, "open"

    def close(self) -> None:
        self.sock.close()


@pytest.mark.slow
async def test_a_client_that_never_reads_is_closed_4009_and_the_others_keep_up(
    start_server: Callable[..., ServerProcess], make_kit: Callable[[ServerProcess], Kit]
) -> None:
    server = start_server(
        limits_send_buffer_frames=SEND_BUFFER_FRAMES,
        limits_send_rate=100_000,
        limits_send_burst=100_000,
    )
    kit = make_kit(server)
    stalled_account, busy, reader_account = await kit.accounts(3)
    sender, reader = await kit.connect(busy), await kit.connect(reader_account, codec="json")
    room = await join_room([sender, reader])
    stalled = await StalledClient.connect(server.port, stalled_account.token)
    try:
        await stalled.send({"t": "room.join", "room": _title(sender, room), "rid": 2})
        assert (await stalled.reply(2))["conv"] == room
        # From here on the stalled client reads nothing.

        acked_at: dict[int, float] = {}
        arrived_at: dict[int, float] = {}

        async def read_all() -> None:
            while len(arrived_at) < MESSAGES:
                frame = await reader.next_push("msg", timeout=STREAM_TIMEOUT_S)
                assert frame["seq"] == len(arrived_at) + 1, frame["seq"]
                arrived_at[frame["seq"]] = time.monotonic()

        async def send_all() -> None:
            window = asyncio.Semaphore(IN_FLIGHT)

            async def one(i: int) -> None:
                async with window:
                    ack = await sender.send(room, f"{i:06d} {TEXT}")
                    acked_at[ack["seq"]] = time.monotonic()

            await asyncio.gather(*(one(i) for i in range(MESSAGES)))

        await asyncio.wait_for(asyncio.gather(read_all(), send_all()), STREAM_TIMEOUT_S)
        assert sorted(arrived_at) == list(range(1, MESSAGES + 1))
        late = {seq: arrived_at[seq] - acked_at[seq] for seq in acked_at}
        worst = max(late.values())
        assert worst < DELIVERY_BOUND_S, f"a member got a message {worst:.2f}s after its ack"

        # The node lets go of the stalled connection by itself, while its peer still
        # reads nothing: the hub no longer counts it.
        async def open_connections() -> float:
            _, text = await api(server.base_url, "GET", "/metrics")
            raw = text.decode() if isinstance(text, bytes) else str(text)
            line = next(ln for ln in raw.splitlines() if ln.startswith("chatd_connections "))
            return float(line.split()[1])

        await async_wait_until(
            lambda: _equals(open_connections(), 2.0),
            timeout=RELEASE_TIMEOUT_S,
            message="the node still holds the stalled connection",
        )

        msgs, end = await stalled.read_to_the_end()
        assert end in (4009, "dropped"), f"the stalled connection ended {end!r}"
        assert msgs < MESSAGES, f"the stalled client got all {msgs} messages: never cut off"
    finally:
        stalled.close()
    # The busy pair is still connected and served.
    assert (await sender.request({"t": "ping"}))["t"] == "pong"
    assert not reader.closed.is_set()


async def _equals(value: Any, expected: float) -> bool:
    return bool(await value == expected)


def _title(client: Any, conv: int) -> str:
    return str(
        next(f["title"] for f in client.frames if f.get("t") == "conv" and f["conv"] == conv)
    )
