"""What moderation needs from the chat server to reach people, and nothing more.

chatd implements it on top of its hub (chatd/mod_bridge.py); moderation never sees the
hub. Every call is made after the change it announces was committed.
"""

from __future__ import annotations

from typing import Any, Protocol


class Notifier(Protocol):
    async def mod_event(self, event: dict[str, Any]) -> None:
        """A `mod.event` ({kind, ts, ...}) to every subscribed moderator, on every node."""

    async def close_user(self, user_id: int, code: int, reason: str) -> int:
        """Closes every connection of the user (with `kicked{reason}` for 4003 and 4004);
        returns the number of connections closed."""

    async def notice(self, user_id: int, text: str, kind: str) -> None:
        """A `notice{text, kind}` to every connection of the user."""

    async def removed(self, conv: int, id: int, seq: int) -> None:
        """A `removed{conv, id, seq}` to every member of the conversation."""


class RateBudget(Protocol):
    """Counted events in fixed windows, shared by all nodes (chatd's rate limiter)."""

    async def count(self, key: str, *, window_s: int) -> int: ...

    async def add(self, key: str, *, window_s: int) -> int: ...

    async def retry_after(self, key: str, *, window_s: int) -> int: ...
