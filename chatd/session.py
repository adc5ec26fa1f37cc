"""One authenticated WebSocket session: each client frame goes to its `on_<type>` handler.

Knows nothing of Starlette: frames come in decoded, replies go out through the
Connection. Sends are checked in frame order and committed in the background, so one
client can have many messages in one group commit.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from chatd import views
from chatd.chat import now_ms
from chatd.connection import Connection
from chatd.errors import Refused, unavailable
from persistence.database import StorageUnavailable
from persistence.records import User
from protocol import frames as f
from protocol import server_frames
from protocol.codec import extract_rid
from protocol.codes import BAD_FRAME_CODES, CloseCode, ErrorCode
from protocol.errors import ProtocolError

if TYPE_CHECKING:
    from chatd.node import Node

log = logging.getLogger("chatd.session")

# Seconds over which bad frames and refused sends are counted.
ABUSE_WINDOW_S = 60.0
# Sends of one connection committing at once; past it the session stops reading.
MAX_SENDS_IN_FLIGHT = 256


class Session:
    def __init__(self, *, node: Node, conn: Connection, user: User) -> None:
        self.node = node
        self.conn = conn
        self.user = user
        # Times of bad frames and of refused sends in the last ABUSE_WINDOW_S: lists, not
        # deques, since nearly all stay empty and an empty deque costs 600 bytes.
        self._bad: list[float] = []
        self._refused: list[float] = []
        self._in_flight = asyncio.Semaphore(MAX_SENDS_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        limits = node.config.limits
        self._bad_limit = limits.bad_frames_per_minute
        self._refused_limit = 2 * limits.send_burst

    # -- output --------------------------------------------------------------------

    async def reply(self, frame: dict[str, Any]) -> None:
        await self.conn.reply(self.conn.codec.encode(frame))

    async def reply_error(
        self,
        code: str,
        message: str,
        *,
        rid: Any = None,
        field: str | None = None,
        cmid: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        self.node.metrics.errors.labels(code=code).inc()
        await self.reply(
            server_frames.error(
                code, message, rid=rid, field=field, cmid=cmid, retry_after=retry_after
            )
        )

    # -- input ---------------------------------------------------------------------

    async def receive(self, data: bytes | str) -> None:
        """Handles one raw client frame; never raises for what the client sent."""
        self.node.metrics.frames_in.inc()
        rid = obj = None
        try:
            obj = self.conn.codec.decode(data)
            rid = extract_rid(obj)
            frame = f.parse_frame(obj)
        except ProtocolError as exc:
            # A frame the decoder refused may still have carried a good rid: exc has it.
            await self.bad_frame(exc, rid if rid is not None else exc.rid, obj)
            return
        handler = _HANDLERS.get(type(frame))
        if handler is None:  # a frame type the protocol knows but sessions do not take
            await self.bad_frame(ProtocolError(ErrorCode.UNKNOWN_TYPE, "not here"), rid, None)
            return
        try:
            await handler(self, frame)
        except Refused as exc:
            await self._refused_reply(exc, frame)
        except ProtocolError as exc:
            await self.bad_frame(exc, rid, None)
        except StorageUnavailable:
            await self._refused_reply(unavailable(), frame)
        except Exception:
            log.exception("handler for %s failed", type(frame).__name__)
            await self.reply_error("internal", "internal error", rid=frame.rid)

    async def bad_frame(self, exc: ProtocolError, rid: Any, obj: Any) -> None:
        # parse_frame puts a send's cmid on the error when it is a good one.
        await self.reply_error(str(exc.code), exc.message, rid=rid, field=exc.field, cmid=exc.cmid)
        if exc.code in BAD_FRAME_CODES:
            self.node.metrics.bad_frames.inc()
            if self._count(self._bad) >= self._bad_limit:
                self.conn.close(CloseCode.TOO_MANY_BAD_FRAMES)

    @staticmethod
    def _count(window: list[float]) -> int:
        now = time.monotonic()
        window.append(now)
        del window[: bisect.bisect_left(window, now - ABUSE_WINDOW_S)]
        return len(window)

    async def _refused_reply(self, exc: Refused, frame: Any) -> None:
        cmid = frame.cmid if isinstance(frame, f.Send) else None
        await self.reply_error(
            exc.code,
            exc.message,
            rid=frame.rid,
            field=exc.field,
            cmid=cmid,
            retry_after=exc.retry_after_ms,
        )
        if exc.code == "invalid":
            self.node.metrics.bad_frames.inc()
            if self._count(self._bad) >= self._bad_limit:
                self.conn.close(CloseCode.TOO_MANY_BAD_FRAMES)
        if exc.code == "rate_limited" and isinstance(frame, f.Send):
            if self._count(self._refused) >= self._refused_limit:
                self.conn.close(CloseCode.RATE_ABUSE)

    async def drain(self) -> None:
        """Waits for sends still committing (on close and shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- handlers ------------------------------------------------------------------

    async def on_send(self, frame: f.Send) -> None:
        chat = self.node.chat
        known = frame.conv in self.conn.convs
        if known:
            # Checks run in frame order; the commit runs behind, so sends pipeline.
            await chat.check_send_rate(self.user.id)
            await chat.check_dm_open(self.user.id, frame.conv)
        await self._in_flight.acquire()
        task = asyncio.get_running_loop().create_task(self._commit(frame, known))
        self._tasks.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight.release()

    async def _commit(self, frame: f.Send, known: bool) -> None:
        try:
            sent = await self.node.chat.do_send(
                self.user, frame.conv, frame.text, frame.cmid, known_member=known, checked=known
            )
        except Refused as exc:
            await self._refused_reply(exc, frame)
            return
        except StorageUnavailable:
            await self._refused_reply(unavailable(), frame)
            return
        except Exception:
            log.exception("send failed")
            await self.reply_error("internal", "internal error", rid=frame.rid, cmid=frame.cmid)
            return
        m = sent.message
        await self.reply(
            server_frames.ack(conv=m.conv, cmid=m.cmid, id=m.id, seq=m.seq, ts=m.ts, rid=frame.rid)
        )

    async def on_sync(self, frame: f.Sync) -> None:
        rows, more = await self.node.chat.history(
            self.user.id, frame.conv, frame.after, frame.limit
        )
        for m in rows:
            await self.reply(views.message_object(m, rid=frame.rid))
        last = await self.node.chat.conversations.last_seq(frame.conv)
        await self.reply(server_frames.synced(frame.conv, last, more, frame.rid))

    async def on_ping(self, frame: f.Ping) -> None:
        await self.reply(server_frames.pong(now_ms(), frame.rid))

    async def _attached_reply(self, conv: Any, rid: Any) -> None:
        hub = self.node.hub
        known = await hub.attach(self.conn, conv.id, conv.last_seq)
        obj = views.conv_object(conv, self.user.id, last_seq=known)
        await self.reply(server_frames.conv_frame(obj, rid))

    async def on_dm_open(self, frame: f.DmOpen) -> None:
        conv = await self.node.chat.do_open_dm(
            self.user, frame.user, skip=self.node.hub.conn_key(self.conn)
        )
        await self._attached_reply(conv, frame.rid)

    async def on_room_join(self, frame: f.RoomJoin) -> None:
        conv = await self.node.chat.do_join_room(
            self.user, frame.room, frame.key, skip=self.node.hub.conn_key(self.conn)
        )
        await self._attached_reply(conv, frame.rid)

    async def on_room_leave(self, frame: f.RoomLeave) -> None:
        await self.node.chat.do_leave(self.user, frame.conv, skip=self.node.hub.conn_key(self.conn))
        self.node.hub.detach(self.conn, frame.conv)
        await self.reply(server_frames.left(frame.conv, frame.rid))

    async def on_block(self, frame: f.Block) -> None:
        await self.node.chat.do_block(self.user, frame.user)
        await self.reply(server_frames.ok(frame.rid))

    async def on_unblock(self, frame: f.Unblock) -> None:
        await self.node.chat.do_unblock(self.user, frame.user)
        await self.reply(server_frames.ok(frame.rid))

    async def on_report(self, frame: f.Report) -> None:
        reports = self.node.reports
        if reports is None:
            raise Refused("unavailable", "reports are not available on this node")
        report = await reports.do_report(
            self.user,
            category=frame.category,
            msg=frame.msg,
            conv=frame.conv,
            user=frame.user,
            note=frame.note,
        )
        await self.reply(server_frames.reported(report["id"], report["status"], frame.rid))

    async def on_mod_subscribe(self, frame: f.ModSubscribe) -> None:
        if self.user.role not in ("moderator", "admin"):
            raise Refused("forbidden", "only moderators may subscribe")
        await self.node.hub.mod_subscribe(self.conn)
        await self.reply(server_frames.mod_subscribed(frame.rid))

    async def on_logout(self, frame: f.Logout) -> None:
        await self.reply(server_frames.ok(frame.rid))
        await self.node.accounts.do_logout(self.conn.session_id, self.user.id)

    async def on_auth_again(self, frame: f.Auth) -> None:
        raise Refused("invalid", "already authenticated", field="t")


# Frame type -> its handler: one table for every session (a dict per session would cost
# 600 bytes on each idle connection).
_HANDLERS: dict[type, Callable[[Session, Any], Awaitable[None]]] = {
    f.Send: Session.on_send,
    f.Sync: Session.on_sync,
    f.Ping: Session.on_ping,
    f.DmOpen: Session.on_dm_open,
    f.RoomJoin: Session.on_room_join,
    f.RoomLeave: Session.on_room_leave,
    f.Block: Session.on_block,
    f.Unblock: Session.on_unblock,
    f.Report: Session.on_report,
    f.ModSubscribe: Session.on_mod_subscribe,
    f.Logout: Session.on_logout,
    f.Auth: Session.on_auth_again,
}
