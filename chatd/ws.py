"""The WebSocket endpoint at /ws: the only code that touches Starlette's WebSocket.

Negotiates the codec and checks the Origin before the upgrade, authenticates the first
frame, then feeds every frame to the Session and lets the Connection write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from chatd import addresses, views
from chatd.chat import now_ms
from chatd.connection import Connection, Data, Wire
from chatd.node import Node
from chatd.session import Session
from chatd.wire import SCOPE_KEY
from persistence.database import StorageUnavailable
from persistence.records import User
from protocol import server_frames
from protocol.codec import Codec, Rid, extract_rid, negotiate
from protocol.codes import CloseCode, ErrorCode
from protocol.errors import ProtocolError
from protocol.frames import Auth, parse_frame

log = logging.getLogger("chatd.ws")

# Seconds an aborted (4009) connection's peer gets to finish closing before we let go.
ABORT_GRACE_S = 2.0
# Seconds a closing connection's writer gets to send what is queued and the close frame.
CLOSE_WAIT_S = 5.0


class _AsgiTransport:
    """Frames sent before the connection exists (a refused auth), through ASGI."""

    __slots__ = ("_closed", "_send")

    def __init__(self, websocket: WebSocket) -> None:
        self._send = websocket._send
        self._closed = False

    async def send(self, data: Data) -> None:
        if isinstance(data, bytes):
            await self._send({"type": "websocket.send", "bytes": data})
        else:
            await self._send({"type": "websocket.send", "text": data})

    async def close(self, code: int) -> None:
        if not self._closed:
            self._closed = True
            await self._send({"type": "websocket.close", "code": int(code), "reason": ""})


def _payload(message: Mapping[str, Any]) -> Data | None:
    data = message.get("bytes")
    if data is not None:
        return data
    return message.get("text")


def direct_ws(app: Starlette) -> ASGIApp:
    """The node's ASGI app under uvicorn: /ws straight to its endpoint, the rest through
    Starlette. Starlette's layers would each hold a coroutine frame on every connection
    for its whole life (about 4 KiB together, on each idle one); the endpoint catches
    what they would have."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/ws":
            scope["app"] = app
            await ws_endpoint(WebSocket(scope, receive, send))
        else:
            await app(scope, receive, send)

    return asgi


def _deny(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def ws_endpoint(websocket: WebSocket) -> None:
    node: Node = websocket.app.state.node
    server_cfg = node.config.server
    offered = list(websocket.scope.get("subprotocols") or ())
    chosen = negotiate(offered)
    if chosen is None:
        await websocket.send_denial_response(
            _deny(400, "bad_request", "offer chatd.v1.msgpack or chatd.v1.json")
        )
        return
    codec, subprotocol = chosen
    peer = websocket.client.host if websocket.client else None
    proxies = websocket.app.state.trusted_proxies
    host = addresses.request_host(peer, websocket.headers, proxies)
    if not addresses.origin_allowed(
        websocket.headers.get("origin"),
        host=host,
        scheme=websocket.url.scheme,
        allowed=server_cfg.allowed_origins,
    ):
        await websocket.send_denial_response(_deny(403, "forbidden", "origin not allowed"))
        return
    if node.shutting_down:
        await websocket.send_denial_response(_deny(503, "unavailable", "node is stopping"))
        return
    wire = websocket.scope.get("extensions", {}).get(SCOPE_KEY)
    if wire is None:  # not served by chatd.serve: its uvicorn protocol is not underneath
        log.error("no chatd wire under /ws: run the node with `python -m chatd serve`")
        await websocket.send_denial_response(_deny(500, "internal", "misconfigured server"))
        return
    await websocket.accept(subprotocol=subprotocol)
    transport = _AsgiTransport(websocket)
    try:
        await _serve(websocket, node, codec, transport, wire)
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("websocket failed")
        with contextlib.suppress(Exception):
            await transport.close(CloseCode.INTERNAL)


async def _refuse_auth(
    transport: _AsgiTransport, codec: Codec, message: str, rid: Rid = None
) -> None:
    error = server_frames.error(ErrorCode.UNAUTHENTICATED, message, rid=rid)
    with contextlib.suppress(Exception):
        await transport.send(codec.encode(error))
        await transport.close(CloseCode.AUTH_FAILED)


async def _serve(
    websocket: WebSocket, node: Node, codec: Codec, transport: _AsgiTransport, wire: Wire
) -> None:
    # Helpers do the authentication and the `ready`, so that what they held (frames, rows,
    # the conversation list) is not kept alive by this frame for the connection's life.
    authenticated = await _authenticate(websocket, node, codec, transport)
    if authenticated is None:
        return
    session_id, user, rid = authenticated
    hub = node.hub
    conn = Connection(
        conn_id=hub.new_conn_id(),
        user_id=user.id,
        username=user.username,
        role=user.role,
        session_id=session_id,
        codec=codec,
        wire=wire,
        flusher=hub.flusher,
        buffer_frames=node.config.limits.send_buffer_frames,
        # Held until `ready` is queued: live pushes of conversations attached before it
        # must not reach the client ahead of it.
        held=True,
    )
    await hub.register(conn)
    session = Session(node=node, conn=conn, user=user)
    try:
        await _ready(node, conn, user, session_id, rid)
        await _read_frames(websocket, conn, session)
    finally:
        hub.unregister(conn)
        await session.drain()
        if not conn.closed:
            conn.close(CloseCode.NORMAL)
        await conn.wait_closed(CLOSE_WAIT_S)


async def _authenticate(
    websocket: WebSocket, node: Node, codec: Codec, transport: _AsgiTransport
) -> tuple[int, User, Rid] | None:
    """The first frame must be a good `auth`: (session id, user, its rid), or None when
    the connection was refused (and closed)."""
    try:
        first = await asyncio.wait_for(websocket.receive(), node.config.limits.auth_timeout_s)
    except TimeoutError:
        await transport.close(CloseCode.AUTH_FAILED)
        return None
    if first["type"] != "websocket.receive":
        return None
    rid = None
    try:
        obj = codec.decode(_payload(first) or b"")
        rid = extract_rid(obj)  # the refusal is a reply too: it echoes a good rid
        frame = parse_frame(obj)
    except ProtocolError as exc:
        rid = rid if rid is not None else exc.rid
        await _refuse_auth(transport, codec, "the first frame must be auth", rid)
        return None
    if not isinstance(frame, Auth):
        await _refuse_auth(transport, codec, "the first frame must be auth", rid)
        return None
    try:
        found = await node.accounts.authenticate(frame.token)
    except StorageUnavailable:
        error = server_frames.error(ErrorCode.UNAVAILABLE, "storage unavailable", rid=rid)
        await transport.send(codec.encode(error))
        await transport.close(CloseCode.INTERNAL)
        return None
    if found is None:
        await _refuse_auth(transport, codec, "bad, expired or revoked token", rid)
        return None
    session_id, user = found
    return session_id, user, rid


async def _ready(node: Node, conn: Connection, user: User, session_id: int, rid: Rid) -> None:
    """Attaches the connection to its conversations, then sends `ready` ahead of all."""
    hub = node.hub
    convs = await node.chat.conversations_for(conn.user_id)
    objs = []
    for conv in convs:
        known = await hub.attach(conn, conv.id, conv.last_seq)
        objs.append(views.conv_object(conv, conn.user_id, last_seq=known))
    ready = server_frames.ready(
        user=views.user_object(user),
        session=session_id,
        node=node.node_id,
        server_time=now_ms(),
        conversations=objs,
        rid=rid,
    )
    conn.release(conn.codec.encode(ready))


async def _read_frames(websocket: WebSocket, conn: Connection, session: Session) -> None:
    """Feeds frames to the session until the socket or the connection closes.

    A connection aborted for not reading (4009) cannot finish its close handshake: the
    server's close frame waits behind the data the peer never read, and so would this
    loop. After a grace period it stops waiting, so the peer holds nothing of ours.
    """
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    gave_up = False

    def give_up() -> None:
        nonlocal gave_up
        if task is not None and not task.done():
            gave_up = True
            task.cancel()

    conn.on_abort = lambda: loop.call_later(ABORT_GRACE_S, give_up)
    receive = websocket.receive
    try:
        while not conn.closed:
            message = await receive()
            if message["type"] != "websocket.receive":
                break
            data = _payload(message)
            if data is not None:
                await session.receive(data)
    except asyncio.CancelledError:
        if not gave_up or task is None:
            raise
        task.uncancel()
    finally:
        conn.on_abort = None
