"""The hub: this node's live connections, and in-order delivery of what the broker brings.

The hub knows connections, not SQL: what it needs from storage comes through the small
HubStorage interface. Per conversation it serves, it keeps the last seq it delivered;
a message that jumps ahead waits briefly for the missing ones, then the hub fetches them
(DESIGN.md, the message path, steps 5 to 7).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from chatd import events, views
from chatd.broker import (
    MOD_CHANNEL,
    Broker,
    BrokerUnavailable,
    conv_channel,
    node_channel,
    user_channel,
)
from chatd.connection import Connection, Data, Flusher
from chatd.metrics import Metrics
from protocol import server_frames
from protocol.codec import Codec
from protocol.codes import CloseCode

log = logging.getLogger("chatd.hub")

# Seconds a message that jumped ahead waits for the missing ones before a fetch. Two
# nodes committing to one conversation publish out of seq order all the time, and under
# load the missing one can take tens of ms to come: fetching it from storage then costs
# a query and gains nothing. A publication really lost (rare) costs this much delay.
GAP_WAIT_S = 0.2
# Messages fetched per gap fill; a longer gap becomes a `conv` push and the client syncs.
FILL_PAGE = 100
# Seconds between checks of the database's last seq against what was delivered.
CHECK_INTERVAL_S = 2.0
# Seconds a gap fill waits for room in one connection's buffer before closing it 4009.
PACED_TIMEOUT_S = 10.0
# Seconds a kick waits for the other nodes to say how many connections they closed.
CLOSE_REPLY_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """What the hub needs of a message read back from storage."""

    conv: int
    id: int
    seq: int
    sender_id: int
    sender_username: str
    text: str
    ts: int
    cmid: str
    removed: bool


class HubStorage(Protocol):
    async def history(self, conv_id: int, after: int, limit: int) -> tuple[list[Any], bool]: ...

    async def ahead_of(self, known: dict[int, int]) -> dict[int, int]: ...

    async def active_sessions(self, session_ids: list[int]) -> set[int]: ...

    async def conversation(self, conv_id: int) -> Any | None: ...

    async def banned_users(self, user_ids: list[int]) -> set[int]: ...


class _Served:
    """One conversation this node serves: its local connections and delivery state."""

    __slots__ = ("conns", "filling", "gap_only", "last", "pending", "timer")

    def __init__(self, last: int) -> None:
        self.conns: set[Connection] = set()
        self.last = last
        self.pending: dict[int, dict[str, Any]] = {}
        self.filling = False
        self.timer: asyncio.TimerHandle | None = None
        # The timer's fill is for a gap only: it does not run if the gap closed meanwhile.
        self.gap_only = False


def _msg_frame(m: dict[str, Any]) -> dict[str, Any]:
    return server_frames.msg(
        conv=m["conv"],
        id=m["id"],
        seq=m["seq"],
        from_id=m["from"],
        from_username=m["un"],
        text=m["text"],
        ts=m["ts"],
        cmid=m["cmid"],
        removed=bool(m.get("removed")),
    )


def _stored_to_event(m: Any) -> dict[str, Any]:
    return {
        "conv": m.conv,
        "id": m.id,
        "seq": m.seq,
        "from": m.sender_id,
        "un": m.sender_username,
        "text": None if m.removed else m.text,
        "ts": m.ts,
        "cmid": m.cmid,
        "removed": m.removed,
    }


class Hub:
    def __init__(
        self,
        *,
        node_id: str,
        broker: Broker,
        storage: HubStorage,
        metrics: Metrics,
    ) -> None:
        self.node_id = node_id
        self._broker = broker
        self._storage = storage
        self._metrics = metrics
        self._by_user: dict[int, set[Connection]] = {}
        self._served: dict[int, _Served] = {}
        self._mods: set[Connection] = set()
        # Writes this node's connections once per loop turn (see chatd.connection).
        self.flusher = Flusher()
        self._next_conn_id = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._checker: asyncio.Task[None] | None = None
        self.broker_up = False
        self._next_request = 0
        # Kicks waiting for the other nodes' counts: request -> (counts, expected, done).
        self._close_replies: dict[int, tuple[list[int], int, asyncio.Event]] = {}
        # Set by the node: called after a broker outage to re-check bans and revocations.
        self.on_resume: Callable[[], None] | None = None
        # Set by the node: a block changed somewhere, so cached block states are stale.
        self.on_blocks_changed: Callable[[], None] | None = None

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        self._checker = asyncio.get_running_loop().create_task(self._check_loop())
        await self._subscribe(node_channel(self.node_id))

    async def stop(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker
        for task in list(self._tasks):
            task.cancel()

    def new_conn_id(self) -> int:
        self._next_conn_id += 1
        return self._next_conn_id

    def conn_key(self, conn: Connection) -> str:
        return f"{self.node_id}/{conn.conn_id}"

    @property
    def connection_count(self) -> int:
        return sum(len(c) for c in self._by_user.values())

    def connections(self) -> list[Connection]:
        return [c for conns in self._by_user.values() for c in conns]

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _subscribe(self, channel: str) -> None:
        try:
            await self._broker.subscribe(channel)
        except BrokerUnavailable:
            pass  # resubscribed with everything else when the broker is back

    def _unsubscribe_later(self, channel: str, needed: Callable[[], bool]) -> None:
        async def unsubscribe() -> None:
            # A connection may have needed the channel again before this task ran; its
            # subscribe found the channel still subscribed and returned at once.
            if needed():
                return
            with contextlib.suppress(BrokerUnavailable):
                await self._broker.unsubscribe(channel)

        self._spawn(unsubscribe())

    # -- connections -----------------------------------------------------------------

    async def register(self, conn: Connection) -> None:
        conns = self._by_user.get(conn.user_id)
        if conns is None:
            conns = self._by_user[conn.user_id] = set()
            conns.add(conn)
            await self._subscribe(user_channel(conn.user_id))
        else:
            conns.add(conn)
        self._metrics.connections.set(self.connection_count)

    def unregister(self, conn: Connection) -> None:
        conns = self._by_user.get(conn.user_id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._by_user[conn.user_id]
                user_id = conn.user_id
                self._unsubscribe_later(user_channel(user_id), lambda: user_id in self._by_user)
        for conv_id in list(conn.convs):
            self.detach(conn, conv_id)
        if conn in self._mods:
            self._mods.discard(conn)
            if not self._mods:
                self._unsubscribe_later(MOD_CHANNEL, lambda: bool(self._mods))
        self._metrics.connections.set(self.connection_count)

    async def attach(self, conn: Connection, conv_id: int, db_last: int) -> int:
        """Adds the connection to a conversation's audience; returns the last seq the
        client should take as known, so that everything after it reaches it live."""
        conn.convs.add(conv_id)
        st = self._served.get(conv_id)
        if st is not None:
            st.conns.add(conn)
            return st.last
        st = self._served[conv_id] = _Served(db_last)
        st.conns.add(conn)
        # Publications that arrive while the subscription takes hold wait in pending, as
        # during a fill: the caller's reply (`conv`, `ready`) must go out before any msg.
        st.filling = True
        try:
            await self._subscribe(conv_channel(conv_id))
        finally:
            st.filling = False
        # What was committed between reading db_last and the subscription taking hold.
        self._schedule_fill(conv_id, st, 0.0)
        return db_last

    def detach(self, conn: Connection, conv_id: int) -> None:
        conn.convs.discard(conv_id)
        st = self._served.get(conv_id)
        if st is None:
            return
        st.conns.discard(conn)
        if not st.conns:
            del self._served[conv_id]
            if st.timer is not None:
                st.timer.cancel()
            self._unsubscribe_later(conv_channel(conv_id), lambda: conv_id in self._served)

    def served_last(self, conv_id: int) -> int | None:
        st = self._served.get(conv_id)
        return None if st is None else st.last

    async def mod_subscribe(self, conn: Connection) -> None:
        first = not self._mods
        self._mods.add(conn)
        conn.mod_subscribed = True
        if first:
            await self._subscribe(MOD_CHANNEL)

    def user_connections(self, user_id: int) -> list[Connection]:
        return list(self._by_user.get(user_id, ()))

    def close_all(self, code: int) -> None:
        for conn in self.connections():
            conn.close(code)

    async def close_user(self, user_id: int, code: int, reason: str) -> int:
        """Closes every connection of the user on every node (`kicked{reason}` first for
        4003 and 4004); returns how many were closed, counted across the nodes.

        Every node with a connection of the user is subscribed to the user's channel, so
        the broker says how many replies to wait for; each node answers on this node's
        own channel with its count. A node that does not answer in time counts as none.
        """
        try:
            expected = await self._broker.subscriber_count(user_channel(user_id))
        except BrokerUnavailable:
            expected = 1 if user_id in self._by_user else 0
        self._next_request += 1
        req = self._next_request
        counts: list[int] = []
        done = asyncio.Event()
        self._close_replies[req] = (counts, expected, done)
        try:
            await self.publish(
                user_channel(user_id),
                events.close_event(
                    code=code, reason=reason, reply=node_channel(self.node_id), req=req
                ),
            )
            if expected and len(counts) < expected:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), CLOSE_REPLY_TIMEOUT_S)
        finally:
            del self._close_replies[req]
        return sum(counts)

    def _on_closed_reply(self, event: dict[str, Any]) -> None:
        waiting = self._close_replies.get(int(event["req"]))
        if waiting is None:
            return
        counts, expected, done = waiting
        counts.append(int(event["n"]))
        if len(counts) >= expected:
            done.set()

    # -- publishing (after commit) ---------------------------------------------------

    async def publish(self, channel: str, payload: bytes) -> None:
        """Publishes through the broker; when it is down, this node's own audience still
        gets the event at once, and the others catch up from storage when it is back.

        Down means this node's subscriptions are: after a Redis restart the publisher may
        reconnect before the subscriber, and a publication that Redis took would then not
        come back to this node. Delivering it here too is safe: a msg that also comes
        back is dropped by its seq, a membership change by the state it finds."""
        heard = self.broker_up
        try:
            await self._broker.publish(channel, payload)
        except BrokerUnavailable:
            self._metrics.broker_publish_failures.inc()
            heard = False
        if not (heard and self.broker_up):
            self.on_publication(channel, payload)

    # -- the broker's handler -----------------------------------------------------------

    def on_publication(self, channel: str, payload: bytes) -> None:
        try:
            event = events.decode(payload)
            kind = event["k"]
            if kind == "m":
                self._on_message(event)
            elif kind == "rm":
                self._on_removed(event)
            elif kind == "blocks":
                if self.on_blocks_changed is not None:
                    self.on_blocks_changed()
            elif kind in ("conv", "left", "close", "notice"):
                user_id = int(channel.rsplit(":", 1)[1])
                self._on_user_event(user_id, kind, event)
            elif kind == "ev":
                self._on_mod_event(event)
            elif kind == "closed":
                self._on_closed_reply(event)
        except Exception:
            log.exception("bad publication on %s", channel)

    def on_broker_up(self, resubscribed: bool) -> None:
        self.broker_up = True
        if resubscribed:
            self._metrics.broker_reconnects.inc()
            for conv_id, st in list(self._served.items()):
                self._schedule_fill(conv_id, st, 0.0)
            if self.on_resume is not None:
                self.on_resume()

    def on_broker_down(self) -> None:
        self.broker_up = False

    # -- messages in seq order ---------------------------------------------------------

    def _on_message(self, m: dict[str, Any]) -> None:
        st = self._served.get(m["conv"])
        if st is None:
            return
        seq = m["seq"]
        if seq <= st.last:
            return  # a duplicate, or already filled from storage
        if seq == st.last + 1 and not st.filling:
            self._deliver_live(st, m)
            st.last = seq
            if st.pending:
                self._drain(st)
            return
        st.pending[seq] = m
        if not st.filling and st.timer is None:
            self._schedule_fill(m["conv"], st, GAP_WAIT_S, gap_only=True)

    def _drain(self, st: _Served) -> None:
        pending = st.pending
        while (m := pending.pop(st.last + 1, None)) is not None:
            self._deliver_live(st, m)
            st.last = m["seq"]
        for seq in [s for s in pending if s <= st.last]:
            del pending[seq]

    def _deliver_live(self, st: _Served, m: dict[str, Any]) -> None:
        self._push_all(st.conns, _msg_frame(m))
        self._metrics.messages_delivered.inc(len(st.conns))

    def _push_all(self, conns: Iterable[Connection], frame: dict[str, Any]) -> None:
        encoded: dict[Codec, Data] = {}
        for conn in list(conns):
            data = encoded.get(conn.codec)
            if data is None:
                data = encoded[conn.codec] = conn.codec.encode(frame)
            conn.push(data)

    def _schedule_fill(
        self, conv_id: int, st: _Served, delay: float, *, gap_only: bool = False
    ) -> None:
        """A fetch from storage after delay; gap_only: only if messages still wait for
        missing ones then (out-of-order publications nearly always close the gap first)."""
        if st.filling:
            return
        if st.timer is not None:
            if gap_only or not st.gap_only:
                return
            st.timer.cancel()  # a fill that must run replaces one that may not
        loop = asyncio.get_running_loop()

        def start() -> None:
            st.timer = None
            if self._served.get(conv_id) is not st or st.filling:
                return
            if st.gap_only and not st.pending:
                return
            st.filling = True
            self._spawn(self._fill(conv_id, st))

        st.gap_only = gap_only
        st.timer = loop.call_later(delay, start)

    async def _fill(self, conv_id: int, st: _Served) -> None:
        """Fetches what this node missed from storage and hands it out, paced."""
        try:
            while True:
                try:
                    rows, more = await self._storage.history(conv_id, st.last, FILL_PAGE)
                except Exception as exc:
                    log.warning("gap fill of conv %s failed: %r", conv_id, exc)
                    return
                rows = [r for r in rows if r.seq > st.last]
                if not rows:
                    return
                self._metrics.gap_fills.inc()
                if more:
                    # Too long to replay live: tell the clients, they sync.
                    conv = await self._storage.conversation(conv_id)
                    if conv is None:
                        return
                    st.last = max(st.last, conv.last_seq)
                    for c in list(st.conns):
                        obj = views.conv_object(conv, c.user_id, last_seq=st.last)
                        c.push(c.codec.encode(server_frames.conv_frame(obj)))
                    return
                frames = [_msg_frame(_stored_to_event(r)) for r in rows]
                # A connection attached while the frames went out was told st.last (not
                # yet moved on), so it needs them too: hand out until nobody new came.
                served: set[Connection] = set()
                while late := [c for c in st.conns if c not in served]:
                    served.update(late)
                    await self._paced_all(late, frames)
                self._metrics.messages_filled.inc(len(rows))
                st.last = max(st.last, rows[-1].seq)
                if not st.pending:
                    return
                self._drain(st)
                if not st.pending:
                    return
        finally:
            st.filling = False
            if st.pending and self._served.get(conv_id) is st:
                self._schedule_fill(conv_id, st, GAP_WAIT_S, gap_only=True)

    async def _paced_all(self, conns: Iterable[Connection], frames: list[dict[str, Any]]) -> None:
        by_codec: dict[Codec, list[Data]] = {}

        async def one(conn: Connection) -> None:
            datas = by_codec.get(conn.codec)
            if datas is None:
                datas = by_codec[conn.codec] = [conn.codec.encode(f) for f in frames]
            try:
                for data in datas:
                    await asyncio.wait_for(conn.reply(data), PACED_TIMEOUT_S)
            except TimeoutError:
                conn.abort(CloseCode.TOO_SLOW)

        await asyncio.gather(*(one(c) for c in list(conns)))

    async def _check_loop(self) -> None:
        """Catches what no publication announced: a node that died between commit and
        publish, or a publication lost in a broker outage.

        A busy conversation is nearly always a little ahead in storage (committed, its
        publication on the way), so a fill comes only for what was committed already at
        the previous check and has still not arrived: a loss is caught within two
        intervals, and traffic costs no fills."""
        previous: dict[int, int] = {}
        while True:
            await asyncio.sleep(CHECK_INTERVAL_S)
            known = {conv_id: st.last for conv_id, st in self._served.items()}
            try:
                ahead = await self._storage.ahead_of(known)
            except Exception as exc:
                log.debug("periodic seq check failed: %r", exc)
                continue
            for conv_id, last in previous.items():
                st = self._served.get(conv_id)
                if st is not None and last > st.last:
                    self._schedule_fill(conv_id, st, 0.0)
            previous = ahead

    def _on_removed(self, event: dict[str, Any]) -> None:
        st = self._served.get(event["conv"])
        if st is not None:
            frame = server_frames.removed(conv=event["conv"], id=event["id"], seq=event["seq"])
            self._push_all(st.conns, frame)

    # -- per-user control --------------------------------------------------------------

    def _reply_closed(self, event: dict[str, Any], closed: int) -> None:
        reply = event.get("reply")
        if reply:
            payload = events.encode({"k": "closed", "req": event.get("req"), "n": closed})
            self._spawn(self.publish(str(reply), payload))

    def _on_user_event(self, user_id: int, kind: str, event: dict[str, Any]) -> None:
        conns = self._by_user.get(user_id)
        if not conns:
            if kind == "close":
                self._reply_closed(event, 0)
            return
        if kind == "close":
            session = event.get("session")
            code = int(event["code"])
            closed = 0
            for conn in list(conns):
                if (session is None or conn.session_id == session) and not conn.closed:
                    last = None
                    if code in (CloseCode.KICKED, CloseCode.BANNED):
                        last = conn.codec.encode(server_frames.kicked(event.get("reason") or ""))
                    conn.close(code, last)
                    closed += 1
            self._reply_closed(event, closed)
            return
        if kind == "notice":
            self._push_all(conns, server_frames.notice(event["text"], event["kind"]))
            return
        skip = event.get("skip")
        targets = [c for c in conns if self.conn_key(c) != skip]
        if kind == "conv":
            conv = event["conv"]
            self._spawn(self._attach_pushed(targets, conv))
        elif kind == "left":
            conv_id = int(event["conv"])
            for conn in targets:
                if conv_id in conn.convs:
                    self.detach(conn, conv_id)
                    conn.push(conn.codec.encode(server_frames.left(conv_id)))

    async def _attach_pushed(self, conns: list[Connection], conv: dict[str, Any]) -> None:
        conv_id = conv["conv"]
        for conn in conns:
            if conv_id in conn.convs or conn.closed:
                continue
            known = await self.attach(conn, conv_id, conv["last_seq"])
            conn.push(conn.codec.encode(server_frames.conv_frame({**conv, "last_seq": known})))

    def _on_mod_event(self, event: dict[str, Any]) -> None:
        if self._mods:
            self._push_all(self._mods, server_frames.mod_event(event["event"]))

    # -- sessions after an outage ----------------------------------------------------------

    async def recheck_sessions(self) -> int:
        """Closes connections whose session was revoked (a ban, a logout) meanwhile."""
        conns = self.connections()
        if not conns:
            return 0
        active = await self._storage.active_sessions(sorted({c.session_id for c in conns}))
        ended = [c for c in conns if c.session_id not in active and not c.closed]
        if not ended:
            return 0
        banned = await self._storage.banned_users(sorted({c.user_id for c in ended}))
        for conn in ended:
            if conn.user_id in banned:
                # The moderator's reason went out with the ban we missed; it is not kept
                # with the session, so the member is told what happened in general terms.
                frame = server_frames.kicked("this account is banned")
                conn.close(CloseCode.BANNED, conn.codec.encode(frame))
            else:
                conn.close(CloseCode.NORMAL)  # logged out meanwhile
        return len(ended)
