"""The WebSocket wire under chatd's connections: uvicorn's sans-I/O protocol, plus a
synchronous write of whole frames straight to the socket.

A room's message goes to every member's connection on the node. Through ASGI each of
those is an awaited `send` and a per-frame pass through the protocol's state machine;
here the frame is built once per node (the same bytes for every recipient: a server's
frames are not masked and compression is off) and each connection's frames of one loop
turn go out in one `transport.write`. The ASGI `send` still does the handshake and the
close, so the protocol's own state stays right.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Sequence
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import Protocol, State

# The scope extension under which the endpoint finds its connection's wire.
SCOPE_KEY = "chatd.wire"

# Frames received and not yet taken by the endpoint before the socket stops being read.
INBOX_FRAMES = 8

_TEXT = 0x81  # FIN + text opcode
_BINARY = 0x82  # FIN + binary opcode

Data = bytes | str


class _FrameMemo:
    """One frame remembered: a fan-out frames the same object for every recipient."""

    __slots__ = ("data", "frame")

    def __init__(self) -> None:
        self.data: Data | None = None
        self.frame = b""

    def frame_of(self, data: Data) -> bytes:
        if data is self.data:
            return self.frame
        if isinstance(data, str):
            payload, first = data.encode(), _TEXT
        else:
            payload, first = data, _BINARY
        n = len(payload)
        if n < 126:
            header = bytes((first, n))
        elif n < 65536:
            header = struct.pack("!BBH", first, 126, n)
        else:
            header = struct.pack("!BBQ", first, 127, n)
        # Hold a reference to data, so that `is` above can never match a new object.
        self.data, self.frame = data, header + payload
        return self.frame


_memo = _FrameMemo()


class _Inbox:
    """What uvicorn uses of asyncio.Queue (one consumer: the endpoint's receive), with
    nothing allocated while empty: an idle connection's queue would hold three deques,
    1.8 KiB."""

    __slots__ = ("_getter", "_items")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._getter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        getter, self._getter = self._getter, None
        if getter is not None and not getter.done():
            getter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    async def get(self) -> Any:
        # The item stays queued until taken here, so a cancelled get loses nothing.
        while not self._items:
            getter = self._getter = asyncio.get_running_loop().create_future()
            try:
                await getter
            finally:
                if self._getter is getter:
                    self._getter = None
        return self._items.pop(0)


class _Flag:
    """What uvicorn uses of asyncio.Event (`writable`), its waiters made only on a wait."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        while not self._value:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            await waiter
        return True


class WireProtocol(WebSocketsSansIOProtocol):
    """Served by uvicorn (`ws=WireProtocol`); the endpoint reaches it through the scope."""

    _on_writable: Callable[[], None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.conn.extensions:
            # The frames written here are built once for every recipient, uncompressed.
            raise RuntimeError("chatd's wire needs ws_per_message_deflate=False")
        # Lighter stand-ins for what every connection holds while idle.
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Flag()  # type: ignore[assignment]

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # None: the handshake was refused before any scope
            scope["extensions"][SCOPE_KEY] = self

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and getattr(self, "request", None) is not None:
            # The handshake's request and response (their headers: 3 KiB) are not
            # needed once it is done; the scope keeps what the endpoint reads.
            del self.request, self.response
            conn = self.conn
            if conn.state is State.OPEN and not conn.reader.buffer:
                # The handshake's parser generator keeps the request alive in its frame;
                # a bare frame parser in its place is where that one stands now (nothing
                # of a frame read), as websockets itself swaps in discard() on a close.
                conn.parser = Protocol.parse(conn)
                next(conn.parser)

    # -- what chatd.connection uses ---------------------------------------------------

    @property
    def gone(self) -> bool:
        """Nothing more can be sent: closed, closing, or the peer went away."""
        return (
            self.disconnected
            or self.close_sent
            or self.conn.state is not State.OPEN
            or self.transport.is_closing()
        )

    def write(self, datas: Sequence[Data]) -> bool:
        """Writes the frames in one go; False (nothing written) while the socket's buffer
        is over its high-water mark or the connection is gone."""
        if not self.writable.is_set() or self.gone:
            return False
        if len(datas) == 1:
            self.transport.write(_memo.frame_of(datas[0]))
        else:
            self.transport.write(b"".join([_memo.frame_of(d) for d in datas]))
        return True

    def when_writable(self, callback: Callable[[], None] | None) -> None:
        """Calls callback once, when the buffer drained or the connection is lost."""
        self._on_writable = callback

    async def close_wire(self, code: int) -> None:
        """The close handshake, through the protocol's own ASGI path."""
        if not self.gone:
            await self.send({"type": "websocket.close", "code": int(code), "reason": ""})

    # -- reading --------------------------------------------------------------------

    def send_receive_event_to_app(self) -> None:
        """uvicorn's, but it stops reading only when INBOX_FRAMES frames wait, not after
        each one: two epoll changes per received frame otherwise."""
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return  # past our close: dropped, as uvicorn does
        if self.curr_msg_data_type == "text":
            try:
                text = data.decode()
            except UnicodeDecodeError:
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
            self.queue.put_nowait({"type": "websocket.receive", "text": text})
        else:
            self.queue.put_nowait({"type": "websocket.receive", "bytes": data})
        if not self.read_paused and self.queue.qsize() >= INBOX_FRAMES:
            self.read_paused = True
            self.transport.pause_reading()

    # -- uvicorn's flow control, told on ----------------------------------------------

    def resume_writing(self) -> None:
        super().resume_writing()
        self._call_writable()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._call_writable()

    def _call_writable(self) -> None:
        callback, self._on_writable = self._on_writable, None
        if callback is not None:
            callback()
