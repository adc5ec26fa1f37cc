"""Limits fixed by the wire contract, in one place so that every check names the same number."""

from typing import Final

MAX_FRAME_BYTES: Final = 64 * 1024  # bytes of one WebSocket message as received; larger: 1009
MAX_TEXT_CHARS: Final = 4000  # code points of a message text, after stripping
MAX_NOTE_CHARS: Final = 2000  # code points of a report note, after stripping
MAX_CMID_CHARS: Final = 64  # characters of a client message id
MAX_RID_CHARS: Final = 64  # characters of a string request id
MAX_JSON_DEPTH: Final = 32  # nesting levels of maps and arrays in one frame (either codec)
SYNC_LIMIT_MAX: Final = 500  # messages per `sync` page or history page, at most
SYNC_LIMIT_DEFAULT: Final = 100  # messages per page when no limit is given
ROOM_NAME_MAX: Final = 64  # characters of a room name, after NFKC and stripping
USERNAME_MIN: Final = 3  # characters of a username, after NFKC
USERNAME_MAX: Final = 32  # characters of a username, after NFKC
PASSWORD_MIN: Final = 8  # characters of a password
PASSWORD_MAX: Final = 256  # characters of a password
MAX_TOKEN_CHARS: Final = 512  # characters of a session token in an `auth` frame
MAX_ID: Final = 2**63 - 1  # largest id or seq: a signed 64-bit database integer
MAX_USER_REF_CHARS: Final = 64  # characters of a username given where a user is named
MAX_EMAIL_CHARS: Final = 254  # characters of an e-mail address (RFC 5321 path limit)
MIN_BIRTH_YEAR: Final = 1900  # earliest year of birth accepted
# Characters of a name before NFKC: bounds the work of normalising hostile input (NFKC can
# expand one code point to 18, so a longer raw string cannot be a valid name anyway).
MAX_RAW_NAME_CHARS: Final = 18 * ROOM_NAME_MAX
MAX_FIELD_KEY_CHARS: Final = 64  # characters of one map key quoted back in an error's `field`
