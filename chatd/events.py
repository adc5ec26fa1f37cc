"""What nodes say to each other through the broker: small msgpack maps, encoded once.

Kinds on a conversation channel: `m` (a committed message), `rm` (a removal).
Kinds on a user channel: `conv` / `left` (membership changed), `close` (kick, ban,
logout), `notice`. On the moderation channel: `ev` (a moderation event). On a node
channel: `closed` (how many connections a kick closed there).
"""

from __future__ import annotations

from typing import Any

import msgpack

_packb = msgpack.Packer(use_bin_type=True).pack


def encode(event: dict[str, Any]) -> bytes:
    return _packb(event)


def decode(payload: bytes) -> dict[str, Any]:
    event = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    if not isinstance(event, dict):
        raise ValueError("event is not a map")
    return event


def message_event(
    *, conv: int, id: int, seq: int, from_id: int, from_username: str, text: str, ts: int, cmid: str
) -> bytes:
    return encode(
        {
            "k": "m",
            "conv": conv,
            "id": id,
            "seq": seq,
            "from": from_id,
            "un": from_username,
            "text": text,
            "ts": ts,
            "cmid": cmid,
        }
    )


def removal_event(*, conv: int, id: int, seq: int) -> bytes:
    return encode({"k": "rm", "conv": conv, "id": id, "seq": seq})


def membership_event(kind: str, *, conv: dict[str, Any] | int, skip: str | None = None) -> bytes:
    """`conv` (with the conversation object) or `left` (with its id); skip names the
    connection ("node/conn") that asked and gets a reply instead of the push."""
    return encode({"k": kind, "conv": conv, "skip": skip})


def close_event(
    *,
    code: int,
    reason: str | None,
    session: int | None = None,
    reply: str | None = None,
    req: int | None = None,
) -> bytes:
    """Closes the user's connections (only one session's, when session is given); with
    reply, each node answers `closed{req, n}` there with the number it closed."""
    return encode(
        {
            "k": "close",
            "code": code,
            "reason": reason,
            "session": session,
            "reply": reply,
            "req": req,
        }
    )


def blocks_event() -> bytes:
    """A block between this user and another changed: cached block states are stale."""
    return encode({"k": "blocks"})


def notice_event(*, text: str, kind: str) -> bytes:
    return encode({"k": "notice", "text": text, "kind": kind})


def mod_event(event: dict[str, Any]) -> bytes:
    return encode({"k": "ev", "event": event})
