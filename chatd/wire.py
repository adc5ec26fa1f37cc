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

import struct
from collections.abc import Callable, Sequence
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

# The scope extension under which the endpoint finds its connection's wire.
SCOPE_KEY = "chatd.wire"

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


class WireProtocol(WebSocketsSansIOProtocol):
    """Served by uvicorn (`ws=WireProtocol`); the endpoint reaches it through the scope."""

    _on_writable: Callable[[], None] | None = None

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # None: the handshake was refused before any scope
            scope["extensions"][SCOPE_KEY] = self

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
        if self.conn.extensions:  # never, as chatd serves it; framed by the protocol then
            for data in datas:
                if isinstance(data, str):
                    self.conn.send_text(data.encode())
                else:
                    self.conn.send_binary(data)
            self.transport.write(b"".join(self.conn.data_to_send()))
        elif len(datas) == 1:
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
