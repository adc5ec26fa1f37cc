"""Linked accounts, the first simple rule: accounts that were seen on the same device, or
whose e-mail reaches the same mailbox (protocol.text.normalize_email_key), are linked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from persistence.records import User
from persistence.signals import SignalStore

# How strongly each reason alone links two accounts, 0 to 1.
REASON_SCORES: Final = {"device": 0.9, "email": 0.8}
# Accounts looked at per reason at most (a shared public computer links very many).
MAX_PER_REASON: Final = 200


@dataclass(frozen=True, slots=True)
class Link:
    user: User
    reasons: tuple[str, ...]
    score: float

    def as_object(self) -> dict[str, Any]:
        return {
            "user": {
                "id": self.user.id,
                "username": self.user.username,
                "status": self.user.status,
            },
            "reasons": list(self.reasons),
            "score": self.score,
        }


def combined_score(reasons: tuple[str, ...]) -> float:
    """Independent reasons add up: 1 - the product of each one's doubt."""
    doubt = 1.0
    for reason in reasons:
        doubt *= 1.0 - REASON_SCORES.get(reason, 0.0)
    return round(1.0 - doubt, 3)


class Linker:
    def __init__(self, *, signals: SignalStore) -> None:
        self._signals = signals

    async def linked(self, user_id: int) -> list[Link]:
        """The accounts linked to this one, strongest first."""
        found: dict[int, list[str]] = {}
        for other in await self._signals.sharing_device(user_id, MAX_PER_REASON):
            found.setdefault(other, []).append("device")
        for other in await self._signals.sharing_email(user_id, MAX_PER_REASON):
            found.setdefault(other, []).append("email")
        users = await self._signals.users(found)
        links = [
            Link(users[uid], tuple(reasons), combined_score(tuple(reasons)))
            for uid, reasons in found.items()
            if uid in users
        ]
        links.sort(key=lambda link: (-link.score, link.user.id))
        return links
