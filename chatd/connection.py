"""One live connection: who it is, its codec, and its bounded send buffer.

Live pushes never wait: a full buffer means the client does not read, and the
connection is closed 4009 so it cannot slow anyone else. Replies to the client's own
requests (sync pages, gap fills) wait for room instead, so they are paced to its reading.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from protocol.codec import Codec
from protocol.codes import CloseCode

log = logging.getLogger("chatd.connection")

Data = bytes | str


class Transport(Protocol):
    """The adapter's side: only chatd.ws implements it, over Starlette's WebSocket."""

    async def send(self, data: Data) -> None: ...

    async def close(self, code: int) -> None: ...


class Connection:
    __slots__ = (
        "_buf",
        "_close_code",
        "_held",
        "_limit",
        "_room",
        "_transport",
        "_wake",
        "_writer",
        "closed",
        "codec",
        "conn_id",
        "convs",
        "mod_subscribed",
        "on_abort",
        "role",
        "session_id",
        "user_id",
        "username",
    )

    def __init__(
        self,
        *,
        conn_id: int,
        user_id: int,
        username: str,
        role: str,
        session_id: int,
        codec: Codec,
        transport: Transport,
        buffer_frames: int,
    ) -> None:
        self.conn_id = conn_id
        self.user_id = user_id
        self.username = username
        self.role = role
        self.session_id = session_id
        self.codec = codec
        self.convs: set[int] = set()
        self.mod_subscribed = False
        self.closed = False
        self._transport = transport
        self._limit = buffer_frames
        self._buf: collections.deque[Data] = collections.deque()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._close_code: int | None = None
        self._held = False
        self._writer: asyncio.Task[None] | None = None
        # Set by the endpoint: told when the connection is aborted for not reading.
        self.on_abort: Callable[[], object] | None = None

    def start(self, *, held: bool = False) -> None:
        """Starts the writer; a held connection queues but sends nothing until release()."""
        self._held = held
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    def release(self, first: Data) -> None:
        """Sends `first` (the `ready` frame) ahead of whatever was queued meanwhile."""
        self._buf.appendleft(first)
        self._held = False
        self._wake.set()

    def push(self, data: Data) -> None:
        """A live push: queued at once, or the connection closes 4009 when full."""
        if self._close_code is not None:
            return
        if len(self._buf) >= self._limit:
            log.info("conn %s too slow, closing 4009", self.conn_id)
            self.abort(CloseCode.TOO_SLOW)
            return
        self._buf.append(data)
        self._wake.set()

    async def reply(self, data: Data) -> None:
        """A reply or a gap fill: waits while the buffer is full."""
        while len(self._buf) >= self._limit and self._close_code is None:
            self._room.clear()
            await self._room.wait()
        if self._close_code is None:
            self._buf.append(data)
            self._wake.set()

    def close(self, code: int, last: Data | None = None) -> None:
        """Sends what is queued, then `last` (e.g. `kicked`), then closes with code."""
        if self._close_code is not None:
            return
        if last is not None:
            self._buf.append(last)
        self._close_code = code
        self.closed = True
        self._wake.set()
        self._room.set()

    def abort(self, code: int) -> None:
        """Closes without sending what is queued: the client is not reading it.

        The writer may be stuck in a send to a peer that does not read, so it is
        cancelled rather than asked to finish.
        """
        already = self._close_code is not None
        self._buf.clear()
        self.close(code)
        if not already and self.on_abort is not None:
            self.on_abort()
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            self._writer = asyncio.get_running_loop().create_task(self._close_transport(code))

    async def _close_transport(self, code: int) -> None:
        with contextlib.suppress(Exception):
            await self._transport.close(code)

    async def wait_closed(self, timeout: float) -> None:
        """Waits for the writer to finish; past timeout (seconds) it is cancelled."""
        if self._writer is None:
            return
        done, _ = await asyncio.wait({self._writer}, timeout=timeout)
        if not done:
            self._writer.cancel()

    async def _write_loop(self) -> None:
        buf, transport = self._buf, self._transport
        try:
            while True:
                if not buf or (self._held and self._close_code is None):
                    if not buf and self._close_code is not None:
                        break
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                data = buf.popleft()
                if len(buf) < self._limit:
                    self._room.set()
                await transport.send(data)
        except Exception as exc:  # the peer went away mid-send
            log.debug("conn %s send failed: %r", self.conn_id, exc)
            self.closed = True
            self._room.set()
            return
        await self._close_transport(self._close_code or CloseCode.NORMAL)
