"""Builders for the frames the server sends, as plain dicts ready for a codec's encode.

Replies take the `rid` of the frame they answer and leave the key out when it is None;
live pushes have none.
"""

from typing import Any

from protocol.codec import Rid
from protocol.codes import ErrorCode


def _reply(frame: dict[str, Any], rid: Rid) -> dict[str, Any]:
    if rid is not None:
        frame["rid"] = rid
    return frame


def member(id: int, username: str) -> dict[str, Any]:
    """A `{id, username}` object, as in `members`, `from` and `by`."""
    return {"id": id, "username": username}


def conversation(
    conv: int, kind: str, title: str, members: list[dict[str, Any]], last_seq: int
) -> dict[str, Any]:
    """A conversation object: `{conv, kind, title, members:[{id, username}], last_seq}`."""
    return {"conv": conv, "kind": kind, "title": title, "members": members, "last_seq": last_seq}


def ready(
    user: dict[str, Any],
    session: int,
    node: str,
    server_time: int,
    conversations: list[dict[str, Any]],
    rid: Rid,
) -> dict[str, Any]:
    return _reply(
        {
            "t": "ready",
            "user": user,
            "session": session,
            "node": node,
            "server_time": server_time,
            "conversations": conversations,
        },
        rid,
    )


def conv_frame(conv: dict[str, Any], rid: Rid = None) -> dict[str, Any]:
    """`conv`: the conversation object's fields, with `t` added (so `conv` is its id)."""
    return _reply({"t": "conv", **conv}, rid)


def left(conv: int, rid: Rid = None) -> dict[str, Any]:
    return _reply({"t": "left", "conv": conv}, rid)


def ack(conv: int, cmid: str, id: int, seq: int, ts: int, rid: Rid = None) -> dict[str, Any]:
    return _reply({"t": "ack", "conv": conv, "cmid": cmid, "id": id, "seq": seq, "ts": ts}, rid)


def msg(
    conv: int,
    id: int,
    seq: int,
    from_id: int,
    from_username: str,
    text: str | None,
    ts: int,
    cmid: str,
    rid: Rid = None,
    removed: bool = False,
) -> dict[str, Any]:
    """A message; a removed one keeps its place but has `text: null, removed: true`."""
    frame: dict[str, Any] = {
        "t": "msg",
        "conv": conv,
        "id": id,
        "seq": seq,
        "from": {"id": from_id, "username": from_username},
        "text": None if removed else text,
        "ts": ts,
        "cmid": cmid,
    }
    if removed:
        frame["removed"] = True
    return _reply(frame, rid)


def synced(conv: int, last_seq: int, more: bool, rid: Rid) -> dict[str, Any]:
    return _reply({"t": "synced", "conv": conv, "last_seq": last_seq, "more": more}, rid)


def ok(rid: Rid) -> dict[str, Any]:
    return _reply({"t": "ok"}, rid)


def pong(ts: int, rid: Rid) -> dict[str, Any]:
    return _reply({"t": "pong", "ts": ts}, rid)


def reported(report_id: int, status: str, rid: Rid) -> dict[str, Any]:
    return _reply({"t": "reported", "report": {"id": report_id, "status": status}}, rid)


def notice(text: str, kind: str) -> dict[str, Any]:
    return {"t": "notice", "text": text, "kind": kind}


def removed(conv: int, id: int, seq: int) -> dict[str, Any]:
    return {"t": "removed", "conv": conv, "id": id, "seq": seq}


def kicked(reason: str) -> dict[str, Any]:
    return {"t": "kicked", "reason": reason}


def mod_subscribed(rid: Rid) -> dict[str, Any]:
    return _reply({"t": "mod.subscribed"}, rid)


def mod_event(event: dict[str, Any]) -> dict[str, Any]:
    """`mod.event`; `event` is `{kind, ts, ...}`."""
    return {"t": "mod.event", "event": event}


def error(
    code: ErrorCode | str,
    message: str,
    *,
    rid: Rid = None,
    field: str | None = None,
    cmid: str | None = None,
    retry_after: int | None = None,
) -> dict[str, Any]:
    """`error`; `retry_after` is in milliseconds (with `rate_limited`)."""
    frame: dict[str, Any] = {"t": "error", "code": str(code), "message": message}
    if field is not None:
        frame["field"] = field
    if cmid is not None:
        frame["cmid"] = cmid
    if retry_after is not None:
        frame["retry_after"] = retry_after
    return _reply(frame, rid)
