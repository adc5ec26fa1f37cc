"""Error codes of `error` frames and WebSocket close codes (PROTOCOL.md section 5)."""

from enum import IntEnum, StrEnum
from typing import Final


class ErrorCode(StrEnum):
    """The `code` of an `error` frame."""

    BAD_FRAME = "bad_frame"
    UNKNOWN_TYPE = "unknown_type"
    INVALID = "invalid"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    NOT_MEMBER = "not_member"
    BLOCKED = "blocked"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class CloseCode(IntEnum):
    """WebSocket close codes; 4xxx are chatd's own."""

    NORMAL = 1000
    TOO_MANY_BAD_FRAMES = 1008
    TOO_LARGE = 1009
    INTERNAL = 1011
    RESTARTING = 1012
    AUTH_FAILED = 4001
    KICKED = 4003
    BANNED = 4004
    RATE_ABUSE = 4008
    TOO_SLOW = 4009


# A frame answered with one of these counts towards the bad-frame close (1008).
BAD_FRAME_CODES: Final = frozenset({ErrorCode.BAD_FRAME, ErrorCode.UNKNOWN_TYPE, ErrorCode.INVALID})
