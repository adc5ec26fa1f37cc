"""A node: one process's wiring of storage, broker, hub and services, started and stopped
as one. Configuration comes in here and is handed down by keyword."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

from chatd.accounts import Accounts
from chatd.broker import Broker
from chatd.broker_memory import MemoryBroker
from chatd.chat import Chat
from chatd.config import Config
from chatd.hub import Hub
from chatd.metrics import Metrics
from chatd.mod_bridge import HubNotifier, ReportDesk
from chatd.ratelimit import MemoryRateLimiter, RateLimiter
from moderation.service import Moderation
from persistence.blocks import BlockStore
from persistence.conversations import ConversationStore
from persistence.database import Database
from persistence.messages import MessageStore
from persistence.migrate import migrate
from persistence.sessions import SessionStore
from persistence.sightings import SightingStore
from persistence.users import UserStore
from persistence.writer import GroupCommitWriter

log = logging.getLogger("chatd.node")


class _HubStorage:
    """What the hub may ask of storage, and nothing more."""

    def __init__(
        self,
        messages: MessageStore,
        conversations: ConversationStore,
        sessions: SessionStore,
        users: UserStore,
    ) -> None:
        self._users = users
        self._messages = messages
        self._conversations = conversations
        self._sessions = sessions

    async def history(self, conv_id: int, after: int, limit: int) -> tuple[list[Any], bool]:
        return await self._messages.history(conv_id, after, limit)

    async def ahead_of(self, known: dict[int, int]) -> dict[int, int]:
        return await self._conversations.ahead_of(known)

    async def active_sessions(self, session_ids: list[int]) -> set[int]:
        return await self._sessions.active_ids(session_ids)

    async def conversation(self, conv_id: int) -> Any | None:
        return await self._conversations.get(conv_id)

    async def banned_users(self, user_ids: list[int]) -> set[int]:
        banned = set()
        for user_id in user_ids:  # only after a broker outage, for revoked sessions
            user = await self._users.by_id(user_id)
            if user is not None and user.status == "banned":
                banned.add(user_id)
        return banned


def make_broker(url: str) -> Broker:
    if url == "memory://":
        return MemoryBroker()
    from chatd.broker_redis import RedisBroker  # only a Redis deployment needs redis-py

    return RedisBroker(url)


def make_limiter(url: str, broker: Broker) -> RateLimiter:
    if url == "memory://":
        return MemoryRateLimiter()
    from chatd.ratelimit_redis import RedisRateLimiter

    return RedisRateLimiter(url)


class Node:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.node_id = config.server.node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.metrics = Metrics(self.node_id)
        self.db: Database | None = None
        self.broker: Broker = make_broker(config.broker.url)
        self.limiter: RateLimiter = make_limiter(config.broker.url, self.broker)
        self.reports: Any = None  # moderation, wired in when present
        self.shutting_down = False
        self._recheck: asyncio.Task[None] | None = None

    async def start(self) -> None:
        cfg = self.config
        if cfg.database.auto_migrate:
            await migrate(cfg.database.url)
        self.db = db = await Database.connect(cfg.database.url)
        self.users = UserStore(db)
        self.sessions = SessionStore(db)
        self.sightings = SightingStore(db)
        self.conversations = ConversationStore(db)
        self.messages = MessageStore(db)
        self.blocks = BlockStore(db)
        self.writer = GroupCommitWriter(db, max_batch=cfg.database.batch_max)
        await self.writer.start()
        self.hub = Hub(
            node_id=self.node_id,
            broker=self.broker,
            storage=_HubStorage(self.messages, self.conversations, self.sessions, self.users),
            metrics=self.metrics,
        )
        self.hub.on_resume = self._on_resume
        self.chat = Chat(
            users=self.users,
            conversations=self.conversations,
            messages=self.messages,
            blocks=self.blocks,
            writer=self.writer,
            hub=self.hub,
            limiter=self.limiter,
            limits=cfg.limits,
            rooms=cfg.rooms,
            metrics=self.metrics,
        )
        self.hub.on_blocks_changed = self.chat.forget_blocks
        self.accounts = Accounts(
            users=self.users,
            sessions=self.sessions,
            sightings=self.sightings,
            limiter=self.limiter,
            hub=self.hub,
            accounts=cfg.accounts,
            limits=cfg.limits,
        )
        self.moderation = Moderation(
            db=db,
            notifier=HubNotifier(self.hub),
            budget=self.limiter,
            gate_days=cfg.moderation.gate_days,
            reports_per_hour=cfg.limits.reports_per_hour,
        )
        self.reports = ReportDesk(self.moderation)
        # Ban evasion: a new account linked to a banned one alerts the moderators.
        self.accounts.on_registered = self.moderation.alerts.do_check_registration
        await self.broker.start(self.hub)
        await self.hub.start()
        log.info("node %s started", self.node_id)

    def _on_resume(self) -> None:
        """After a broker outage: bans, logouts and blocks made meanwhile were not heard."""
        self.chat.forget_blocks()

        async def recheck() -> None:
            try:
                closed = await self.hub.recheck_sessions()
                if closed:
                    log.info("closed %d connections revoked during the broker outage", closed)
            except Exception as exc:
                log.warning("session re-check failed: %r", exc)

        self._recheck = asyncio.get_running_loop().create_task(recheck())

    async def stop(self) -> None:
        """Closes connections 1012, finishes commits under way, then lets go of storage."""
        self.shutting_down = True
        if hasattr(self, "hub"):
            from protocol.codes import CloseCode

            self.hub.close_all(CloseCode.RESTARTING)
            await self.hub.stop()
        if hasattr(self, "writer"):
            await self.writer.stop()
        with contextlib.suppress(Exception):
            await self.broker.close()
        if self.db is not None:
            await self.db.close()

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        storage = self.db is not None and await self.db.ping()
        broker = self.broker.connected
        self.metrics.broker_connected.set(1 if broker else 0)
        return storage, {"storage": storage, "broker": broker, "node": self.node_id}
