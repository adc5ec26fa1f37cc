"""Client frames as frozen dataclasses, and parse_frame, which checks a decoded map into one."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeAlias

from protocol.codec import Rid, extract_rid
from protocol.codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.limits import MAX_CMID_CHARS, MAX_TOKEN_CHARS, SYNC_LIMIT_DEFAULT
from protocol.text import (
    check_cmid,
    check_id,
    check_limit,
    check_message_text,
    check_note,
    check_seq,
    check_user_ref,
    has_surrogate,
    normalize_room_name,
)

REPORT_CATEGORIES: Final = (
    "minor_sexual",
    "sexual",
    "harassment",
    "threat",
    "fake_account",
    "ban_evasion",
    "spam",
    "other",
)


@dataclass(frozen=True, slots=True)
class Auth:
    TYPE: ClassVar[str] = "auth"
    token: str
    rid: Rid = None


@dataclass(frozen=True, slots=True)
class DmOpen:
    TYPE: ClassVar[str] = "dm.open"
    user: int | str
    rid: Rid = None


@dataclass(frozen=True, slots=True)
class RoomJoin:
    TYPE: ClassVar[str] = "room.join"
    room: str  # the display name, NFKC-normalised and stripped
    key: str  # the comparison key (casefolded)
    rid: Rid = None


@dataclass(frozen=True, slots=True)
class RoomLeave:
    TYPE: ClassVar[str] = "room.leave"
    conv: int
    rid: Rid = None


@dataclass(frozen=True, slots=True)
class Send:
    TYPE: ClassVar[str] = "send"
    conv: int
    text: str  # stripped
    cmid: str
    rid: Rid = None


@dataclass(frozen=True, slots=True)
class Sync:
    TYPE: ClassVar[str] = "sync"
    conv: int
    after: int = 0
    limit: int = SYNC_LIMIT_DEFAULT
    rid: Rid = None


@dataclass(frozen=True, slots=True)
class Block:
    TYPE: ClassVar[str] = "block"
    user: int | str
    rid: Rid = None


@dataclass(frozen=True, slots=True)
class Unblock:
    TYPE: ClassVar[str] = "unblock"
    user: int | str
    rid: Rid = None


@dataclass(frozen=True, slots=True)
class Report:
    TYPE: ClassVar[str] = "report"
    category: str
    msg: int | None = None
    conv: int | None = None
    user: int | str | None = None
    note: str | None = None
    rid: Rid = None


@dataclass(frozen=True, slots=True)
class Ping:
    TYPE: ClassVar[str] = "ping"
    rid: Rid = None


@dataclass(frozen=True, slots=True)
class ModSubscribe:
    TYPE: ClassVar[str] = "mod.subscribe"
    rid: Rid = None


@dataclass(frozen=True, slots=True)
class Logout:
    """Extension: the session logs out; its connections close with 1000."""

    TYPE: ClassVar[str] = "logout"
    rid: Rid = None


ClientFrame: TypeAlias = (
    Auth
    | DmOpen
    | RoomJoin
    | RoomLeave
    | Send
    | Sync
    | Block
    | Unblock
    | Report
    | Ping
    | ModSubscribe
    | Logout
)


def _invalid(field: str, message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID, f"{field} {message}", field=field)


def _parse_auth(obj: dict[str, Any], rid: Rid) -> Auth:
    token = obj.get("token")
    if not isinstance(token, str):
        raise _invalid("token", "is required" if token is None else "must be a string")
    if not 1 <= len(token) <= MAX_TOKEN_CHARS:
        raise _invalid("token", f"must be 1 to {MAX_TOKEN_CHARS} characters")
    return Auth(token, rid)


def _parse_dm_open(obj: dict[str, Any], rid: Rid) -> DmOpen:
    return DmOpen(check_user_ref(obj.get("user")), rid)


def _parse_room_join(obj: dict[str, Any], rid: Rid) -> RoomJoin:
    display, key = normalize_room_name(obj.get("room"))
    return RoomJoin(display, key, rid)


def _parse_room_leave(obj: dict[str, Any], rid: Rid) -> RoomLeave:
    return RoomLeave(check_id(obj.get("conv"), "conv"), rid)


def _parse_send(obj: dict[str, Any], rid: Rid) -> Send:
    get = obj.get
    return Send(
        check_id(get("conv"), "conv"), check_message_text(get("text")), check_cmid(get("cmid")), rid
    )


def _parse_sync(obj: dict[str, Any], rid: Rid) -> Sync:
    conv = check_id(obj.get("conv"), "conv")
    after = obj.get("after")
    return Sync(
        conv,
        0 if after is None else check_seq(after, "after"),
        check_limit(obj.get("limit")),
        rid,
    )


def _parse_block(obj: dict[str, Any], rid: Rid) -> Block:
    return Block(check_user_ref(obj.get("user")), rid)


def _parse_unblock(obj: dict[str, Any], rid: Rid) -> Unblock:
    return Unblock(check_user_ref(obj.get("user")), rid)


def _parse_report(obj: dict[str, Any], rid: Rid) -> Report:
    category = obj.get("category")
    if category not in REPORT_CATEGORIES:  # a tuple of str: unhashable values are fine here
        raise _invalid("category", "must be one of " + ", ".join(REPORT_CATEGORIES))
    msg = obj.get("msg")
    conv = obj.get("conv")
    user = obj.get("user")
    if msg is None and conv is None and user is None:
        raise _invalid("msg", "is required: a report names a msg, a conv or a user")
    return Report(
        str(category),
        None if msg is None else check_id(msg, "msg"),
        None if conv is None else check_id(conv, "conv"),
        None if user is None else check_user_ref(user),
        check_note(obj.get("note")),
        rid,
    )


def _parse_ping(obj: dict[str, Any], rid: Rid) -> Ping:
    return Ping(rid)


def _parse_mod_subscribe(obj: dict[str, Any], rid: Rid) -> ModSubscribe:
    return ModSubscribe(rid)


def _parse_logout(obj: dict[str, Any], rid: Rid) -> Logout:
    return Logout(rid)


# A constant table from `t` to its parser, fixed at import; nothing registers into it.
_PARSERS: Final[dict[str, Callable[[dict[str, Any], Rid], ClientFrame]]] = {
    Auth.TYPE: _parse_auth,
    DmOpen.TYPE: _parse_dm_open,
    RoomJoin.TYPE: _parse_room_join,
    RoomLeave.TYPE: _parse_room_leave,
    Send.TYPE: _parse_send,
    Sync.TYPE: _parse_sync,
    Block.TYPE: _parse_block,
    Unblock.TYPE: _parse_unblock,
    Report.TYPE: _parse_report,
    Ping.TYPE: _parse_ping,
    ModSubscribe.TYPE: _parse_mod_subscribe,
    Logout.TYPE: _parse_logout,
}

CLIENT_FRAME_TYPES: Final = frozenset(_PARSERS)


def _echo_cmid(value: Any) -> str | None:
    """The cmid of a refused `send`, when it is good enough to send back."""
    if type(value) is str and 1 <= len(value) <= MAX_CMID_CHARS and not has_surrogate(value):
        return value
    return None


def parse_frame(obj: dict[str, Any]) -> ClientFrame:
    """Check a decoded frame map and return its dataclass.

    Unknown fields are ignored. Errors carry the frame's `rid` (and a `send`'s `cmid`)
    when good, so `err.to_frame()` is the reply.
    """
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, "a frame must be a map")
    rid = extract_rid(obj)
    t = obj.get("t")
    if not isinstance(t, str):
        raise ProtocolError(ErrorCode.BAD_FRAME, "a frame needs a string `t`", rid=rid)
    parser = _PARSERS.get(t)
    if parser is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, "unknown frame type", rid=rid)
    try:
        return parser(obj, rid)
    except ProtocolError as err:
        err.rid = rid
        if parser is _parse_send:
            err.cmid = _echo_cmid(obj.get("cmid"))
        raise
