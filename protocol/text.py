"""Checks of the strings and numbers that WebSocket frames and HTTP bodies share.

Every check returns the value to use (stripped, normalised) or raises
`ProtocolError(ErrorCode.INVALID, message, field=field)`. A value of the wrong type (a bool
where an int belongs, a float, bytes, None where a value is required) is invalid too.
"""

import re
import unicodedata
from datetime import UTC, date, datetime
from typing import Any, Final

from protocol.codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.limits import (
    MAX_CMID_CHARS,
    MAX_EMAIL_CHARS,
    MAX_ID,
    MAX_NOTE_CHARS,
    MAX_RAW_NAME_CHARS,
    MAX_TEXT_CHARS,
    MAX_USER_REF_CHARS,
    MIN_BIRTH_YEAR,
    PASSWORD_MAX,
    PASSWORD_MIN,
    ROOM_NAME_MAX,
    SYNC_LIMIT_DEFAULT,
    SYNC_LIMIT_MAX,
    USERNAME_MAX,
    USERNAME_MIN,
)

_SURROGATE: Final = re.compile("[\ud800-\udfff]")
# ASCII digits only: `\d` would also take other scripts' digits.
_BIRTHDATE: Final = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_QUERY_INT: Final = re.compile(r"[0-9]{1,19}")
_NAME_PUNCTUATION: Final = frozenset("_.-")
_GMAIL_DOMAINS: Final = frozenset({"gmail.com", "googlemail.com"})


def has_surrogate(value: str) -> bool:
    """Whether `value` holds a lone surrogate, i.e. is not valid Unicode."""
    return not value.isascii() and _SURROGATE.search(value) is not None


def _invalid(field: str, message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID, f"{field} {message}", field=field)


def _check_str(value: Any, field: str, *, allow_nul: bool = False) -> str:
    if not isinstance(value, str):
        raise _invalid(field, "is required" if value is None else "must be a string")
    if has_surrogate(value):
        raise _invalid(field, "must be valid Unicode (it holds a lone surrogate)")
    # PostgreSQL text cannot hold U+0000; refuse it here rather than fail at storage.
    if not allow_nul and "\x00" in value:
        raise _invalid(field, "must not contain U+0000")
    return value


def _check_int(value: Any, field: str, low: int, high: int) -> int:
    # type() rather than isinstance(): bool is an int subclass and must not pass.
    if type(value) is not int:
        raise _invalid(field, "is required" if value is None else "must be an integer")
    if not low <= value <= high:
        raise _invalid(field, f"must be from {low} to {high}")
    return value


def check_message_text(value: Any, field: str = "text") -> str:
    """A message text: stripped, 1 to MAX_TEXT_CHARS code points."""
    text = _check_str(value, field).strip()
    if not text:
        raise _invalid(field, "must not be empty or only white space")
    if len(text) > MAX_TEXT_CHARS:
        raise _invalid(field, f"must be at most {MAX_TEXT_CHARS} characters")
    return text


def check_note(value: Any, field: str = "note") -> str | None:
    """An optional note: stripped, up to MAX_NOTE_CHARS code points; blank gives None."""
    if value is None:
        return None
    note = _check_str(value, field).strip()
    if len(note) > MAX_NOTE_CHARS:
        raise _invalid(field, f"must be at most {MAX_NOTE_CHARS} characters")
    return note or None


def _is_name_char(ch: str, allow_space: bool) -> bool:
    # isdigit() covers category Nd (and digits such as superscripts, which NFKC maps to Nd).
    return ch.isalpha() or ch.isdigit() or ch in _NAME_PUNCTUATION or (allow_space and ch == " ")


def _normalize_name(value: Any, field: str, low: int, high: int, allow_space: bool) -> str:
    raw = _check_str(value, field)
    if len(raw) > MAX_RAW_NAME_CHARS:
        raise _invalid(field, f"must be at most {high} characters")
    name = unicodedata.normalize("NFKC", raw)
    if allow_space:
        name = name.strip()
    if not name:
        raise _invalid(field, "must not be empty")
    if not low <= len(name) <= high:
        raise _invalid(field, f"must be {low} to {high} characters")
    if not all(_is_name_char(ch, allow_space) for ch in name):
        allowed = "letters, digits, spaces, _ . -" if allow_space else "letters, digits, _ . -"
        raise _invalid(field, f"may contain only {allowed}")
    return name


def normalize_room_name(value: Any, field: str = "room") -> tuple[str, str]:
    """A room name as (display name, comparison key).

    The display name is NFKC-normalised and stripped; the key is its casefold, so that
    names differing only in case or compatibility form are one room.
    """
    display = _normalize_name(value, field, 1, ROOM_NAME_MAX, allow_space=True)
    return display, display.casefold()


def check_username(value: Any, field: str = "username") -> tuple[str, str]:
    """A username as (NFKC-normalised name, casefolded key); no spaces, nothing stripped."""
    name = _normalize_name(value, field, USERNAME_MIN, USERNAME_MAX, allow_space=False)
    return name, name.casefold()


def check_password(value: Any, field: str = "password") -> str:
    """A password of PASSWORD_MIN to PASSWORD_MAX characters, taken as given."""
    password = _check_str(value, field, allow_nul=True)
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise _invalid(field, f"must be {PASSWORD_MIN} to {PASSWORD_MAX} characters")
    return password


def check_email(value: Any, field: str = "email") -> str:
    """An e-mail address checked for form only; returned stripped."""
    email = _check_str(value, field).strip()
    if not email:
        raise _invalid(field, "is required")
    if len(email) > MAX_EMAIL_CHARS:
        raise _invalid(field, f"must be at most {MAX_EMAIL_CHARS} characters")
    if any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in email):
        raise _invalid(field, "must not contain white space or control characters")
    if email.count("@") != 1:
        raise _invalid(field, "must contain exactly one @")
    local, domain = email.split("@")
    if not local:
        raise _invalid(field, "needs a part before the @")
    labels = domain.split(".")
    if len(labels) < 2 or not all(labels):
        raise _invalid(field, "needs a domain such as example.org after the @")
    return email


def check_birthdate(value: Any, field: str = "birthdate", *, today: date | None = None) -> date:
    """A birthdate given as YYYY-MM-DD: a real date, from MIN_BIRTH_YEAR, not after today.

    `today` defaults to the current UTC date; tests pass their own.
    """
    match = _BIRTHDATE.fullmatch(_check_str(value, field))
    if match is None:
        raise _invalid(field, "must be a date written YYYY-MM-DD")
    year, month, day = (int(part) for part in match.groups())
    try:
        born = date(year, month, day)
    except ValueError:
        raise _invalid(field, "is not a real date") from None
    if year < MIN_BIRTH_YEAR:
        raise _invalid(field, f"must be in {MIN_BIRTH_YEAR} or later")
    if today is None:
        today = datetime.now(UTC).date()
    if born > today:
        raise _invalid(field, "must not be in the future")
    return born


def age_on(birthdate: date, today: date) -> int:
    """Age in whole years on `today` (someone born on 29 February ages on 1 March)."""
    before_birthday = (today.month, today.day) < (birthdate.month, birthdate.day)
    return today.year - birthdate.year - before_birthday


def normalize_email_key(email: str) -> str:
    """A key under which addresses reaching one mailbox compare equal (ban-evasion links).

    Lower-cased; Gmail ignores dots and `+tag` in the local part and treats
    googlemail.com as gmail.com, so those are folded away too.
    """
    email = email.strip().lower()
    local, at, domain = email.rpartition("@")
    if not at:
        return email
    if domain in _GMAIL_DOMAINS:
        local = local.split("+", 1)[0].replace(".", "")
        domain = "gmail.com"
    return f"{local}@{domain}"


def check_cmid(value: Any, field: str = "cmid") -> str:
    """A client message id: a string of 1 to MAX_CMID_CHARS characters."""
    cmid = _check_str(value, field)
    if not 1 <= len(cmid) <= MAX_CMID_CHARS:
        raise _invalid(field, f"must be 1 to {MAX_CMID_CHARS} characters")
    return cmid


def check_id(value: Any, field: str) -> int:
    """An id of a user, conversation, message, report or case: 1 to MAX_ID."""
    return _check_int(value, field, 1, MAX_ID)


def check_seq(value: Any, field: str) -> int:
    """A sequence number, 0 (before the first message) to MAX_ID."""
    return _check_int(value, field, 0, MAX_ID)


def check_limit(
    value: Any,
    field: str = "limit",
    *,
    default: int = SYNC_LIMIT_DEFAULT,
    maximum: int = SYNC_LIMIT_MAX,
) -> int:
    """A page size: None gives `default`, else 1 to `maximum`."""
    if value is None:
        return default
    return _check_int(value, field, 1, maximum)


def check_user_ref(value: Any, field: str = "user") -> int | str:
    """A user named by id (an int) or by username (a string, returned as given)."""
    if type(value) is int:
        return _check_int(value, field, 1, MAX_ID)
    if not isinstance(value, str):
        raise _invalid(field, "is required" if value is None else "must be a user id or a username")
    name = _check_str(value, field)
    if not 1 <= len(name) <= MAX_USER_REF_CHARS:
        raise _invalid(field, f"must be 1 to {MAX_USER_REF_CHARS} characters")
    return name


def parse_query_int(value: str | None, field: str) -> int | None:
    """An integer from an HTTP query string (ASCII digits only); None when absent.

    Range checks stay with check_id, check_seq and check_limit, which take the result.
    """
    if value is None:
        return None
    if _QUERY_INT.fullmatch(value) is None:
        raise _invalid(field, "must be a whole number")
    return int(value)
