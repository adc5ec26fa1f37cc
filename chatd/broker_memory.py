"""The in-process broker: for a single node, when no Redis is configured."""

from __future__ import annotations

from chatd.broker import BrokerHandler


class MemoryBroker:
    """Delivers each publication to this process's own handler, in publish order."""

    def __init__(self) -> None:
        self._handler: BrokerHandler | None = None
        self._channels: set[str] = set()

    @property
    def connected(self) -> bool:
        return self._handler is not None

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler
        handler.on_broker_up(False)

    async def close(self) -> None:
        self._handler = None
        self._channels.clear()

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    async def subscriber_count(self, channel: str) -> int:
        return 1 if channel in self._channels else 0

    async def publish(self, channel: str, payload: bytes) -> None:
        # Synchronous hand-over keeps publish order, as Redis does on one connection.
        if self._handler is not None and channel in self._channels:
            self._handler.on_publication(channel, payload)
