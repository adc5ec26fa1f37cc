"""The broker interface: how a node hears what other nodes (and itself) publish.

The broker never calls the hub. The node is the broker's handler: it decodes what
arrives and hands it to the hub. Implementations: broker_memory (one process),
broker_redis (Redis pub/sub, sharded pub/sub on a cluster).
"""

from __future__ import annotations

from typing import Protocol


def conv_channel(conv_id: int) -> str:
    """Messages, removals and membership changes of one conversation."""
    return f"chatd:c:{conv_id}"


def user_channel(user_id: int) -> str:
    """Control traffic for one account: kicks, bans, logouts, notices, new conversations."""
    return f"chatd:u:{user_id}"


def node_channel(node_id: str) -> str:
    """Replies meant for one node (how many connections a kick closed)."""
    return f"chatd:n:{node_id}"


MOD_CHANNEL = "chatd:mod"
"""Live moderation events, heard by every node that has a subscribed moderator."""


class BrokerHandler(Protocol):
    def on_publication(self, channel: str, payload: bytes) -> None:
        """A payload arrived on a channel this node subscribed to."""

    def on_broker_up(self, resubscribed: bool) -> None:
        """The broker is (again) connected; resubscribed is True after an outage."""

    def on_broker_down(self) -> None:
        """The broker connection was lost; publications may be missed until it is up."""


class Broker(Protocol):
    @property
    def connected(self) -> bool: ...

    async def start(self, handler: BrokerHandler) -> None:
        """Connects, and from then on hands every publication to the handler."""

    async def close(self) -> None: ...

    async def subscribe(self, channel: str) -> None:
        """Returns once the subscription is in place (or queued while disconnected)."""

    async def unsubscribe(self, channel: str) -> None: ...

    async def publish(self, channel: str, payload: bytes) -> None:
        """Publishes in call order; raises BrokerUnavailable if it cannot be sent."""

    async def subscriber_count(self, channel: str) -> int:
        """How many nodes are subscribed to channel; BrokerUnavailable if unknown."""


class BrokerUnavailable(Exception):
    """The broker could not take a publication; the database still holds the truth."""
