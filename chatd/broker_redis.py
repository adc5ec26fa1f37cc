"""The Redis broker: pub/sub between nodes; sharded pub/sub on a Redis Cluster.

One subscriber connection per shard carries every channel this node needs on it, and
one publisher connection per shard sends publications in call order, pipelined. When a
connection drops, the link reconnects with backoff and jitter, resubscribes everything
and tells the handler, which then fills gaps from storage: the database, not Redis, is
the source of truth, so an outage can delay messages but never lose them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

from chatd.broker import BrokerHandler, BrokerUnavailable

log = logging.getLogger("chatd.broker.redis")

# Seconds to wait for a TCP connect or a command before the link counts as down.
CONNECT_TIMEOUT_S = 2.0
# Reconnect backoff: first delay and ceiling, in seconds; each wait is jittered.
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
# Seconds of silence on a subscriber connection before it is pinged, to notice a dead peer.
PING_INTERVAL_S = 5.0
# Seconds a PING may go unanswered before the link counts as down (a frozen server or a
# partition leaves the TCP connection open, so only a missing answer shows it).
PONG_TIMEOUT_S = 2.0
# Seconds one read on the subscriber connection waits before the link checks its pings.
READ_POLL_S = 0.5
# Seconds a subscribe waits for Redis to confirm it.
SUBSCRIBE_CONFIRM_S = 2.0
# Publications sent in one pipeline round trip at most.
PUBLISH_BATCH = 512


def _client(host: str, port: int, db: int = 0, password: str | None = None) -> aioredis.Redis:
    # No silent retries inside redis-py: the link must see every drop, to resubscribe
    # and to have the hub fill the gap.
    return aioredis.Redis(
        host=host,
        port=port,
        db=db,
        password=password,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=None,
        retry=Retry(NoBackoff(), 0),
        single_connection_client=True,
    )


def _by_slot(channels: list[str]) -> list[list[str]]:
    """SSUBSCRIBE and SUNSUBSCRIBE take channels of one slot only (else CROSSSLOT)."""
    groups: dict[int, list[str]] = {}
    for ch in channels:
        groups.setdefault(key_slot(ch.encode()), []).append(ch)
    return list(groups.values())


class _Link:
    """One shard: a subscriber connection with its reader, and an ordered publisher."""

    def __init__(
        self,
        broker: RedisBroker,
        host: str,
        port: int,
        *,
        sharded: bool,
        db: int = 0,
        password: str | None = None,
    ) -> None:
        self.broker = broker
        self.host, self.port, self.db, self.password = host, port, db, password
        self.sharded = sharded
        # The channels this node wants; _sent those asked of the current connection.
        self.channels: set[str] = set()
        self._sent: set[str] = set()
        self.connected = False
        self._pubsub: Any = None
        self._sub_client: aioredis.Redis | None = None
        self._confirm: dict[str, asyncio.Future[None]] = {}
        self._pong: asyncio.Future[None] | None = None
        self._pub_client: aioredis.Redis | None = None
        self._pub_queue: list[tuple[str, bytes, asyncio.Future[None]]] = []
        self._pub_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._ever_connected = False
        self._closing = False

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run()), loop.create_task(self._publish_loop())]

    async def close(self) -> None:
        self._closing = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self._drop_sub()
        if self._pub_client is not None:
            with contextlib.suppress(Exception):
                await self._pub_client.aclose()

    # -- subscriptions -----------------------------------------------------------

    async def _send_subscribe(self, channels: list[str]) -> None:
        if self.sharded:
            for group in _by_slot(channels):
                await self._pubsub.ssubscribe(*group)
        else:
            await self._pubsub.subscribe(*channels)

    async def _send_unsubscribe(self, channels: list[str]) -> None:
        if self.sharded:
            for group in _by_slot(channels):
                await self._pubsub.sunsubscribe(*group)
        else:
            await self._pubsub.unsubscribe(*channels)

    def _expect(self, channel: str) -> asyncio.Future[None]:
        fut = self._confirm.get(channel)
        if fut is None or fut.done():
            fut = self._confirm[channel] = asyncio.get_running_loop().create_future()
        return fut

    async def subscribe(self, channel: str) -> None:
        if channel in self.channels:
            return
        self.channels.add(channel)
        if not self.connected:
            return  # taken along when the link (re)connects: see _reconcile
        self._sent.add(channel)
        fut = self._expect(channel)
        try:
            await self._send_subscribe([channel])
            await asyncio.wait_for(asyncio.shield(fut), SUBSCRIBE_CONFIRM_S)
        except Exception as exc:
            log.info("subscribe %s on %s:%s failed: %r", channel, self.host, self.port, exc)
        finally:
            if self._confirm.get(channel) is fut:
                del self._confirm[channel]

    async def unsubscribe(self, channel: str) -> None:
        if channel not in self.channels:
            return
        self.channels.discard(channel)
        if self.connected and self._pubsub is not None:
            self._sent.discard(channel)
            with contextlib.suppress(Exception):
                await self._send_unsubscribe([channel])

    async def _drop_sub(self) -> None:
        pubsub, client = self._pubsub, self._sub_client
        self._pubsub = self._sub_client = None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _connect(self) -> asyncio.Task[None]:
        """Opens the subscriber connection and starts its reader; returns the reader once
        Redis has answered a PING and confirmed every channel this node wants."""
        loop = asyncio.get_running_loop()
        self._sub_client = _client(self.host, self.port, self.db, self.password)
        self._pubsub = self._sub_client.pubsub(ignore_subscribe_messages=False)
        self._sent = set()
        self._pong = loop.create_future()
        await asyncio.wait_for(self._pubsub.ping(), CONNECT_TIMEOUT_S)
        reader = loop.create_task(self._read())
        try:
            await self._reconcile([self._pong])
        except BaseException:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            raise
        return reader

    async def _reconcile(self, waiting: list[asyncio.Future[None]]) -> None:
        """Brings the connection's subscriptions to what the node wants. Subscribes and
        unsubscribes called meanwhile only changed `channels` (the link was not up yet),
        so it loops until nothing changed while it waited; the caller then marks the
        link up with no await in between, and later calls go to Redis directly."""
        while True:
            missing = sorted(self.channels - self._sent)
            extra = sorted(self._sent - self.channels)
            if missing:
                waiting += [self._expect(ch) for ch in missing]
                self._sent.update(missing)
                await self._send_subscribe(missing)
            if extra:
                self._sent.difference_update(extra)
                await self._send_unsubscribe(extra)
            pending = [f for f in waiting if not f.done()]
            if not pending and self.channels == self._sent:
                return
            if pending:
                await asyncio.wait_for(asyncio.gather(*pending), SUBSCRIBE_CONFIRM_S * 2)

    async def _run(self) -> None:
        delay = BACKOFF_FIRST_S
        while not self._closing:
            try:
                reader = await self._connect()
                # Up with every channel confirmed: from here on nothing is missed.
                self._confirm.clear()
                self.connected = True
                delay = BACKOFF_FIRST_S
                resubscribed = self._ever_connected
                self._ever_connected = True
                self.broker.link_up(self, resubscribed)
                await reader
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                level = logging.INFO if self.connected else logging.DEBUG
                log.log(level, "redis %s:%s link down: %r", self.host, self.port, exc)
            was_up = self.connected
            self.connected = False
            for fut in self._confirm.values():
                if not fut.done():
                    fut.cancel()
            self._confirm.clear()
            await self._drop_sub()
            if was_up:
                self.broker.link_down(self)
            if self._closing:
                return
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(BACKOFF_MAX_S, delay * 2)

    async def _read(self) -> None:
        try:
            await self._read_loop()
        except BaseException as exc:
            # Whoever waits for a confirmation or a PONG learns that none will come.
            lost = ConnectionError(f"subscriber connection lost: {exc!r}")
            for fut in [*self._confirm.values(), self._pong]:
                if fut is not None and not fut.done():
                    fut.set_exception(lost)
                    fut.exception()  # retrieved: nobody may be waiting any more
            raise

    async def _read_loop(self) -> None:
        pubsub = self._pubsub
        handler = self.broker.handler
        loop = asyncio.get_running_loop()
        heard = loop.time()
        pinged: float | None = None
        while True:
            msg = await pubsub.get_message(timeout=READ_POLL_S)
            now = loop.time()
            if msg is None:
                if pinged is not None:
                    if now - pinged > PONG_TIMEOUT_S:
                        raise ConnectionError(f"no answer to PING within {PONG_TIMEOUT_S}s")
                elif now - heard >= PING_INTERVAL_S:
                    await asyncio.wait_for(pubsub.ping(), CONNECT_TIMEOUT_S)
                    pinged = now
                continue
            heard, pinged = now, None
            kind = msg["type"]
            if kind in ("message", "smessage"):
                channel = msg["channel"]
                if isinstance(channel, bytes):
                    channel = channel.decode()
                if handler is not None:
                    handler.on_publication(channel, msg["data"])
            elif kind in ("subscribe", "ssubscribe"):
                channel = msg["channel"]
                if isinstance(channel, bytes):
                    channel = channel.decode()
                fut = self._confirm.get(channel)
                if fut is not None and not fut.done():
                    fut.set_result(None)
            elif kind == "pong":
                if self._pong is not None and not self._pong.done():
                    self._pong.set_result(None)

    # -- publishing ----------------------------------------------------------------

    def publish(self, channel: str, payload: bytes) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pub_queue.append((channel, payload, fut))
        self._pub_wake.set()
        return fut

    async def _publish_loop(self) -> None:
        command = "SPUBLISH" if self.sharded else "PUBLISH"
        while True:
            if not self._pub_queue:
                self._pub_wake.clear()
                await self._pub_wake.wait()
                continue
            batch = self._pub_queue[:PUBLISH_BATCH]
            del self._pub_queue[:PUBLISH_BATCH]
            error: Exception | None = None
            # A connection kept from before a Redis restart fails on first use: the batch
            # goes once more, on a new connection. (Had a drop come after Redis took it,
            # the copies would be harmless: nodes drop a msg they have by its seq.)
            for _ in range(2):
                fresh = self._pub_client is None
                try:
                    if self._pub_client is None:
                        self._pub_client = _client(self.host, self.port, self.db, self.password)
                    pipe = self._pub_client.pipeline(transaction=False)
                    for channel, payload, _ in batch:
                        pipe.execute_command(command, channel, payload)
                    await asyncio.wait_for(pipe.execute(), CONNECT_TIMEOUT_S)
                    error = None
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    error = exc
                    log.debug("publish to %s:%s failed: %r", self.host, self.port, exc)
                    client, self._pub_client = self._pub_client, None
                    if client is not None:
                        with contextlib.suppress(Exception):
                            await client.aclose()
                    # A timeout may have reached Redis: sending again could duplicate.
                    if fresh or isinstance(exc, TimeoutError):
                        break
            for _, _, fut in batch:
                if fut.done():
                    continue
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(BrokerUnavailable(str(error)))

    async def subscriber_count(self, channel: str) -> int:
        client = _client(self.host, self.port, self.db, self.password)
        try:
            sub = "SHARDNUMSUB" if self.sharded else "NUMSUB"
            reply = await asyncio.wait_for(
                client.execute_command("PUBSUB", sub, channel), CONNECT_TIMEOUT_S
            )
            return _numsub(reply, channel)
        finally:
            await client.aclose()


def _numsub(reply: Any, channel: str) -> int:
    """PUBSUB NUMSUB / SHARDNUMSUB as redis-py gives it: a flat [name, n, ...] list, a
    list of (name, n) pairs, or a dict."""
    if isinstance(reply, dict):
        for key, value in reply.items():
            if (key.decode() if isinstance(key, bytes) else str(key)) == channel:
                return int(value)
        return 0
    items = list(reply)
    if items and isinstance(items[0], list | tuple):
        items = [x for pair in items for x in pair]
    for name, value in zip(items[::2], items[1::2], strict=True):
        if (name.decode() if isinstance(name, bytes) else str(name)) == channel:
            return int(value)
    return 0


class RedisBroker:
    """`redis://host:port/db` (pub/sub) or `redis+cluster://host:port` (sharded pub/sub)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cluster = url.startswith("redis+cluster://")
        self.handler: BrokerHandler | None = None
        self._links: list[_Link] = []
        self._slot_links: dict[int, _Link] = {}
        self._up: set[_Link] = set()
        # Whether the handler was last told "up", and whether a link that came up since
        # may have missed publications (it reconnected, or took channels along).
        self._reported_up = False
        self._missed = False

    @property
    def connected(self) -> bool:
        return bool(self._links) and len(self._up) == len(self._links)

    async def start(self, handler: BrokerHandler) -> None:
        self.handler = handler
        parts = urlsplit(self.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 6379
        password = parts.password
        if not self.cluster:
            db = int(parts.path.lstrip("/") or 0)
            self._links = [_Link(self, host, port, sharded=False, db=db, password=password)]
        else:
            await self._discover(host, port, password)
        for link in self._links:
            link.start()

    async def _discover(self, host: str, port: int, password: str | None) -> None:
        """Maps every slot to its master; a node that starts while the cluster is down
        retries until it answers."""
        delay = BACKOFF_FIRST_S
        while True:
            rc = RedisCluster(host=host, port=port, password=password)
            try:
                await asyncio.wait_for(rc.initialize(), CONNECT_TIMEOUT_S * 2)
                slots = await rc.execute_command("CLUSTER SLOTS")
                break
            except Exception as exc:
                log.info("redis cluster discovery failed: %r", exc)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(BACKOFF_MAX_S, delay * 2)
            finally:
                with contextlib.suppress(Exception):
                    await rc.aclose()
        by_addr: dict[tuple[str, int], _Link] = {}
        for entry in _slot_ranges(slots):
            start, end, (h, p) = entry
            link = by_addr.get((h, p))
            if link is None:
                link = by_addr[(h, p)] = _Link(self, h, p, sharded=True, password=password)
            for slot in range(start, end + 1):
                self._slot_links[slot] = link
        self._links = list(by_addr.values())

    def _link(self, channel: str) -> _Link:
        if not self.cluster:
            return self._links[0]
        return self._slot_links[key_slot(channel.encode())]

    async def close(self) -> None:
        for link in self._links:
            await link.close()

    async def subscribe(self, channel: str) -> None:
        await self._link(channel).subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        await self._link(channel).unsubscribe(channel)

    async def publish(self, channel: str, payload: bytes) -> None:
        await self._link(channel).publish(channel, payload)

    async def subscriber_count(self, channel: str) -> int:
        try:
            return await self._link(channel).subscriber_count(channel)
        except Exception as exc:
            raise BrokerUnavailable(str(exc)) from exc

    # -- link state, reported to the handler as one broker ----------------------------

    def link_up(self, link: _Link, resubscribed: bool) -> None:
        self._up.add(link)
        # Channels taken along on (re)connect may have missed publications.
        self._missed = self._missed or resubscribed or bool(link.channels)
        if self._reported_up or len(self._up) < len(self._links):
            return
        # Up once every shard is: the handler then fills what any of them missed.
        self._reported_up = True
        missed, self._missed = self._missed, False
        if self.handler is not None:
            self.handler.on_broker_up(missed)

    def link_down(self, link: _Link) -> None:
        self._up.discard(link)
        if not self._reported_up:
            return
        self._reported_up = False
        if self.handler is not None:
            self.handler.on_broker_down()


def _slot_ranges(reply: Any) -> list[tuple[int, int, tuple[str, int]]]:
    """CLUSTER SLOTS, as redis-py returns it (a list, or a dict keyed by range)."""
    out: list[tuple[int, int, tuple[str, int]]] = []
    if isinstance(reply, dict):
        for (start, end), info in reply.items():
            primary = info["primary"]
            out.append((int(start), int(end), (str(primary[0]), int(primary[1]))))
        return out
    for entry in reply:
        start, end, primary = entry[0], entry[1], entry[2]
        h = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
        out.append((int(start), int(end), (h, int(primary[1]))))
    return out
