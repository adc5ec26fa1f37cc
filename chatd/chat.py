"""Conversations and messages: the rules (membership, blocks, limits) and the actions.

`check_*` validates, `do_*` changes state and then notifies through the hub, always
after the commit. Used by the WebSocket session and the HTTP API alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from chatd import events, views
from chatd.broker import conv_channel, user_channel
from chatd.config import LimitsConfig, RoomsConfig
from chatd.errors import Refused, not_found, unavailable
from chatd.hub import Hub
from chatd.metrics import Metrics
from chatd.ratelimit import RateLimiter
from persistence.blocks import BlockStore
from persistence.conversations import ConversationStore
from persistence.database import StorageUnavailable
from persistence.messages import MessageStore
from persistence.records import Conversation, Message, User
from persistence.users import UserStore
from persistence.writer import AppendFailed, GroupCommitWriter
from protocol.text import check_username

# Pairs whose block state is cached before the cache starts over.
BLOCK_CACHE_MAX = 100_000
# Seconds in the new-DM window (limits.new_dms_per_hour).
NEW_DM_WINDOW_S = 3600


def _pair(a: int, b: int) -> tuple[int, int]:
    """The key of a pair of accounts, whichever comes first."""
    return (a, b) if a < b else (b, a)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Sent:
    message: Message
    duplicate: bool


class Chat:
    def __init__(
        self,
        *,
        users: UserStore,
        conversations: ConversationStore,
        messages: MessageStore,
        blocks: BlockStore,
        writer: GroupCommitWriter,
        hub: Hub,
        limiter: RateLimiter,
        limits: LimitsConfig,
        rooms: RoomsConfig,
        metrics: Metrics,
    ) -> None:
        self.users = users
        self.conversations = conversations
        self.messages = messages
        self.blocks = blocks
        self.writer = writer
        self.hub = hub
        self.limiter = limiter
        self.limits = limits
        self.rooms = rooms
        self.metrics = metrics
        # Conversation id -> a DM's two member ids, or None for a room. Neither a DM's
        # members nor a conversation's kind ever change, so this never goes stale.
        self._dm_pairs: dict[int, tuple[int, int] | None] = {}
        # (lower id, higher id) -> whether either blocks the other; emptied on any change.
        self._block_cache: dict[tuple[int, int], bool] = {}
        # Counts forget_blocks() calls: a read that straddles one is not cached.
        self._block_generation = 0

    # -- lookups ------------------------------------------------------------------------

    async def resolve_user(self, ref: int | str) -> User:
        if isinstance(ref, int):
            user = await self.users.by_id(ref)
        else:
            try:
                _, key = check_username(ref, "user")
            except Exception:
                raise not_found("no such user") from None
            user = await self.users.by_username_key(key)
        if user is None or user.status == "deleted":
            raise not_found("no such user")
        return user

    async def conversations_for(self, user_id: int) -> list[Conversation]:
        """The user's conversations; on the way, what the first send in each of its DMs
        would read (the DM's members, the block state between them) is cached, in one
        read for all of its DMs rather than two per DM at their first messages."""
        convs = await self.conversations.for_user(user_id)
        partners: list[int] = []
        for conv in convs:
            pair = None
            if conv.kind == "dm" and len(conv.members) == 2:
                pair = (conv.members[0].id, conv.members[1].id)
                partners.append(pair[0] if pair[1] == user_id else pair[1])
            self._dm_pairs[conv.id] = pair
        if partners:
            generation = self._block_generation
            blocked = await self.blocks.block_partners(user_id)
            for other in partners:
                self._remember_block(user_id, other, other in blocked, generation)
        return convs

    async def check_member(self, conv_id: int, user_id: int) -> None:
        if not await self.conversations.is_member(conv_id, user_id):
            raise Refused("not_member", "you are not a member of this conversation")

    # -- DMs and rooms -----------------------------------------------------------------

    async def do_open_dm(self, user: User, ref: int | str, *, skip: str | None) -> Conversation:
        other = await self.resolve_user(ref)
        if other.id == user.id:
            raise Refused("invalid", "a DM needs another member", field="user")
        if await self.blocks.blocked_between(user.id, other.id):
            raise Refused("blocked", "one of you blocks the other")
        existing = await self.conversations.dm_between(user.id, other.id)
        if existing is None:
            key = f"newdm:{user.id}"
            if (
                await self.limiter.count(key, window_s=NEW_DM_WINDOW_S)
                >= self.limits.new_dms_per_hour
            ):
                retry = await self.limiter.retry_after(key, window_s=NEW_DM_WINDOW_S)
                raise Refused("rate_limited", "too many new DMs", retry_after_ms=retry)
        conv, created = await self.conversations.open_dm(user.id, other.id, now_ms())
        if created:
            await self.limiter.add(f"newdm:{user.id}", window_s=NEW_DM_WINDOW_S)
            await self._notify_joined(conv, user.id, skip)
            await self._notify_joined(conv, other.id, None)
        return conv

    async def do_join_room(
        self, user: User, name: str, key: str, *, skip: str | None
    ) -> Conversation:
        joined = await self.conversations.join_room(
            key, name, user.id, now_ms(), create=self.rooms.open_creation
        )
        if joined is None:
            raise not_found("no such room")
        conv, newly = joined
        if newly:
            await self._notify_joined(conv, user.id, skip)
        return conv

    async def do_leave(self, user: User, conv_id: int, *, skip: str | None) -> None:
        conv = await self.conversations.get(conv_id)
        if conv is None or all(m.id != user.id for m in conv.members):
            raise Refused("not_member", "you are not a member of this conversation")
        if conv.kind != "room":
            raise Refused("invalid", "only rooms can be left", field="conv")
        await self.conversations.leave(conv_id, user.id)
        await self.hub.publish(
            user_channel(user.id), events.membership_event("left", conv=conv_id, skip=skip)
        )

    async def _notify_joined(self, conv: Conversation, user_id: int, skip: str | None) -> None:
        obj = views.conv_object(conv, user_id)
        await self.hub.publish(
            user_channel(user_id), events.membership_event("conv", conv=obj, skip=skip)
        )

    # -- blocks ------------------------------------------------------------------------

    async def do_block(self, user: User, ref: int | str) -> User:
        other = await self.resolve_user(ref)
        if other.id == user.id:
            raise Refused("invalid", "you cannot block yourself", field="user")
        await self.blocks.block(user.id, other.id, now_ms())
        await self._notify_blocks(user.id, other.id)
        return other

    async def do_unblock(self, user: User, ref: int | str) -> None:
        other = await self.resolve_user(ref)
        await self.blocks.unblock(user.id, other.id)
        await self._notify_blocks(user.id, other.id)

    # -- messages ----------------------------------------------------------------------

    async def check_send_rate(self, user_id: int) -> None:
        wait = await self.limiter.take(
            f"send:{user_id}", rate=self.limits.send_rate, burst=self.limits.send_burst
        )
        if wait:
            raise Refused("rate_limited", "sending too fast", retry_after_ms=wait)

    async def _dm_pair(self, conv_id: int) -> tuple[int, int] | None:
        if conv_id in self._dm_pairs:
            return self._dm_pairs[conv_id]
        conv = await self.conversations.get(conv_id)
        if conv is None:
            return None
        pair = None
        if conv.kind == "dm" and len(conv.members) == 2:
            pair = (conv.members[0].id, conv.members[1].id)
        self._dm_pairs[conv_id] = pair
        return pair

    async def check_dm_open(self, user_id: int, conv_id: int) -> None:
        """In a DM, neither member may send while either blocks the other."""
        pair = await self._dm_pair(conv_id)
        if pair is not None:
            other = pair[0] if pair[1] == user_id else pair[1]
            if await self._blocked(user_id, other):
                raise Refused("blocked", "one of you blocks the other")

    async def _blocked(self, a: int, b: int) -> bool:
        """Whether either blocks the other, cached: this is on every DM send's path."""
        blocked = self._block_cache.get(_pair(a, b))
        if blocked is None:
            generation = self._block_generation
            blocked = await self.blocks.blocked_between(a, b)
            self._remember_block(a, b, blocked, generation)
        return blocked

    def _remember_block(self, a: int, b: int, blocked: bool, generation: int) -> None:
        """Caches a block state read when forget_blocks() had run `generation` times; a
        read that straddles a change is dropped, as it may be stale."""
        if generation != self._block_generation:
            return
        if len(self._block_cache) >= BLOCK_CACHE_MAX:
            self._block_cache.clear()
        self._block_cache[_pair(a, b)] = blocked

    def forget_blocks(self) -> None:
        """Called when any block changed (on any node), and after a broker outage."""
        self._block_cache.clear()
        self._block_generation += 1

    async def _notify_blocks(self, a: int, b: int) -> None:
        self.forget_blocks()
        for user_id in (a, b):
            await self.hub.publish(user_channel(user_id), events.blocks_event())

    async def do_send(
        self,
        user: User,
        conv_id: int,
        text: str,
        cmid: str,
        *,
        known_member: bool,
        checked: bool = False,
    ) -> Sent:
        """Commits the message, then publishes it; returns the first message of a retry.

        known_member: the caller knows the sender is a member (its connection is in the
        conversation); checked: it already ran the rate and block checks.
        """
        if not known_member:
            # A retry is answered with its first ack, whatever conversation it names.
            first = await self.messages.by_cmid(user.id, cmid)
            if first is not None:
                return Sent(first, True)
            await self.check_member(conv_id, user.id)
        if not checked:
            await self.check_send_rate(user.id)
            await self.check_dm_open(user.id, conv_id)
        started = time.perf_counter()
        try:
            result = await self.writer.append(
                sender_id=user.id,
                sender_username=user.username,
                conv_id=conv_id,
                cmid=cmid,
                text=text,
                ts=now_ms(),
            )
        except StorageUnavailable:
            raise unavailable() from None
        except AppendFailed:
            raise Refused("internal", "the message could not be stored") from None
        m = result.message
        if not result.duplicate:
            self.metrics.send_latency.observe(time.perf_counter() - started)
            self.metrics.messages_sent.inc()
            await self.hub.publish(
                conv_channel(m.conv),
                events.message_event(
                    conv=m.conv,
                    id=m.id,
                    seq=m.seq,
                    from_id=m.sender_id,
                    from_username=m.sender_username,
                    text=m.text,
                    ts=m.ts,
                    cmid=m.cmid,
                ),
            )
        return Sent(m, result.duplicate)

    async def history(
        self, user_id: int, conv_id: int, after: int, limit: int
    ) -> tuple[list[Message], bool]:
        await self.check_member(conv_id, user_id)
        return await self.messages.history(conv_id, after, limit)
