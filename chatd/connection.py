"""One live connection: who it is, its codec, and its bounded send buffer.

Live pushes never wait: a full buffer means the client does not read, and the
connection is closed 4009 so it cannot slow anyone else. Replies to the client's own
requests (sync pages, gap fills) wait for room instead, so they are paced to its reading.

Nothing runs per connection at rest: what is pushed during a loop turn is written at the
turn's end by the node's Flusher, every frame of the turn in one write, straight to the
wire. No task, no event, until a connection has to wait (a full socket buffer, a paced
reply, a close).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from protocol.codec import Codec
from protocol.codes import CloseCode

log = logging.getLogger("chatd.connection")

Data = bytes | str


class Wire(Protocol):
    """The socket side: only chatd.wire implements it, under uvicorn."""

    @property
    def gone(self) -> bool: ...

    def write(self, datas: Sequence[Data]) -> bool: ...

    def when_writable(self, callback: Callable[[], None] | None) -> None: ...

    async def close_wire(self, code: int) -> None: ...


class Flusher:
    """Writes each connection that got frames during this loop turn, once, at its end.

    A room's message reaches every member's connection in one turn, and under load one
    turn brings several messages: one write per connection per turn, not per frame.
    """

    __slots__ = ("_dirty",)

    def __init__(self) -> None:
        self._dirty: list[Connection] = []

    def mark(self, conn: Connection) -> None:
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self._flush)
        self._dirty.append(conn)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            try:
                conn.flush()
            except Exception:  # one broken connection must not hold up the others
                log.exception("conn %s: flush failed", conn.conn_id)


class Connection:
    __slots__ = (
        "_buf",
        "_close_code",
        "_closer",
        "_done",
        "_finished",
        "_flusher",
        "_held",
        "_limit",
        "_marked",
        "_paused",
        "_room",
        "_wire",
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
        wire: Wire,
        flusher: Flusher,
        buffer_frames: int,
        held: bool = False,
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
        self._wire = wire
        self._flusher = flusher
        self._limit = buffer_frames
        # A list, not a deque: it is emptied whole on each write, and an empty deque costs
        # 600 bytes on every idle connection.
        self._buf: list[Data] = []
        # A held connection queues but sends nothing until release().
        self._held = held
        self._marked = False  # in the flusher's list for this turn
        self._paused = False  # the socket's buffer is full: waiting for it to drain
        self._close_code: int | None = None
        self._done = False  # the close went out, or the peer is gone
        # Made only when someone has to wait: most connections never need them.
        self._room: asyncio.Event | None = None
        self._finished: asyncio.Event | None = None
        self._closer: asyncio.Task[None] | None = None
        # Set by the endpoint: told when the connection is aborted for not reading.
        self.on_abort: Callable[[], object] | None = None

    def release(self, first: Data) -> None:
        """Sends `first` (the `ready` frame) ahead of whatever was queued meanwhile."""
        self._buf.insert(0, first)
        self._held = False
        self._mark()

    def push(self, data: Data) -> None:
        """A live push: queued at once, or the connection closes 4009 when full."""
        if self._close_code is not None:
            return
        if len(self._buf) >= self._limit:
            log.info("conn %s too slow, closing 4009", self.conn_id)
            self.abort(CloseCode.TOO_SLOW)
            return
        self._buf.append(data)
        self._mark()

    async def reply(self, data: Data) -> None:
        """A reply or a gap fill: waits while the buffer is full."""
        while len(self._buf) >= self._limit and self._close_code is None:
            if self._room is None:
                self._room = asyncio.Event()
            self._room.clear()
            await self._room.wait()
        if self._close_code is None:
            self._buf.append(data)
            self._mark()

    def close(self, code: int, last: Data | None = None) -> None:
        """Sends what is queued, then `last` (e.g. `kicked`), then closes with code."""
        if self._close_code is not None:
            return
        if last is not None:
            self._buf.append(last)
        self._close_code = code
        self.closed = True
        self._wake_repliers()
        self._mark()

    def abort(self, code: int) -> None:
        """Closes without sending what is queued: the client is not reading it."""
        already = self._close_code is not None
        self._buf.clear()
        self.close(code)
        if not already and self.on_abort is not None:
            self.on_abort()

    async def wait_closed(self, timeout: float) -> None:
        """Waits until the close went out (or the peer is gone); past timeout (seconds)
        the close is given up."""
        if self._done:
            return
        if self._finished is None:
            self._finished = asyncio.Event()
        try:
            await asyncio.wait_for(self._finished.wait(), timeout)
        except TimeoutError:
            if self._closer is not None:
                self._closer.cancel()
            self._finish()

    # -- writing --------------------------------------------------------------------

    def _mark(self) -> None:
        if self._marked or self._done or (self._held and self._close_code is None):
            return
        self._marked = True
        self._flusher.mark(self)

    def flush(self) -> None:
        """Writes everything queued in one go; then, when closing, starts the close."""
        self._marked = False
        if self._done or (self._held and self._close_code is None):
            return
        buf = self._buf
        if buf and not self._paused:
            if self._wire.write(buf):
                buf.clear()
                self._wake_repliers()
            elif self._wire.gone:
                self._lost()
                return
            else:
                self._paused = True
                self._wire.when_writable(self._resume)
        if not buf and self._close_code is not None and self._closer is None:
            self._closer = asyncio.get_running_loop().create_task(self._close_wire())

    def _resume(self) -> None:
        self._paused = False
        try:
            if self._wire.gone:
                self._lost()
            else:
                self._mark()
        except Exception:  # called from the protocol's flow control: never raise there
            log.exception("conn %s: resume failed", self.conn_id)

    def _lost(self) -> None:
        """The peer went away: nothing more can go out."""
        log.debug("conn %s: peer gone with %d frames queued", self.conn_id, len(self._buf))
        self._buf.clear()
        if self._close_code is None:
            self._close_code = CloseCode.NORMAL
        self.closed = True
        self._wake_repliers()
        self._finish()

    async def _close_wire(self) -> None:
        with contextlib.suppress(Exception):
            await self._wire.close_wire(self._close_code or CloseCode.NORMAL)
        self._finish()

    def _finish(self) -> None:
        self._done = True
        self._buf.clear()
        self._wire.when_writable(None)
        if self._finished is not None:
            self._finished.set()

    def _wake_repliers(self) -> None:
        if self._room is not None:
            self._room.set()
