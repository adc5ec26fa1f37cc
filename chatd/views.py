"""How stored records look on the wire: users, conversations and messages as clients see them."""

from __future__ import annotations

import datetime
from typing import Any

from protocol import server_frames
from protocol.text import age_on


def today() -> datetime.date:
    return datetime.datetime.now(datetime.UTC).date()


def user_object(user: Any, *, on: datetime.date | None = None) -> dict[str, Any]:
    """`{id, username, age, role}`, and `org` for members of trusted organisations."""
    obj: dict[str, Any] = {
        "id": user.id,
        "username": user.username,
        "age": age_on(user.birthdate, on or today()),
        "role": user.role,
    }
    if user.org:
        obj["org"] = user.org
    return obj


def conv_object(conv: Any, viewer_id: int, *, last_seq: int | None = None) -> dict[str, Any]:
    """A DM's title is the other member's username; a room's, its name."""
    members = [{"id": m.id, "username": m.username} for m in conv.members]
    if conv.kind == "dm":
        others = [m["username"] for m in members if m["id"] != viewer_id]
        title = others[0] if others else (members[0]["username"] if members else "")
    else:
        title = conv.title
    return {
        "conv": conv.id,
        "kind": conv.kind,
        "title": title,
        "members": members,
        "last_seq": conv.last_seq if last_seq is None else last_seq,
    }


def message_object(m: Any, *, rid: Any = None) -> dict[str, Any]:
    """A `msg` frame (with `t`); removed messages hide their text."""
    return server_frames.msg(
        conv=m.conv,
        id=m.id,
        seq=m.seq,
        from_id=m.sender_id,
        from_username=m.sender_username,
        text=None if m.removed else m.text,
        ts=m.ts,
        cmid=m.cmid,
        rid=rid,
        removed=m.removed,
    )
