"""The shared string and number checks of protocol.text."""

from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from protocol.codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.limits import MAX_ID
from protocol.text import (
    age_on,
    check_birthdate,
    check_cmid,
    check_email,
    check_id,
    check_limit,
    check_message_text,
    check_note,
    check_password,
    check_seq,
    check_user_ref,
    check_username,
    has_surrogate,
    normalize_email_key,
    normalize_room_name,
    parse_query_int,
)

TODAY = date(2025, 6, 15)
# Values of the wrong type for any string check.
NOT_STRINGS = [None, 1, 1.5, True, b"bytes", ["a"], {"a": 1}]
# Values of the wrong type for any integer check.
NOT_INTS = [None, True, False, 1.0, "1", b"1", [1], {"id": 1}]


def invalid(check: Callable[..., Any], *args: Any, **kwargs: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        check(*args, **kwargs)
    assert caught.value.code is ErrorCode.INVALID
    return caught.value


def test_has_surrogate() -> None:
    assert has_surrogate("a\ud800")
    assert has_surrogate("\udfff")
    assert not has_surrogate("😀 ascii å")


# --- message text and notes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("hej", "hej"),
        ("  hej då \n", "hej då"),
        ("\u3000\u00a0x\t", "x"),
        ("line 1\n\nline 2", "line 1\n\nline 2"),
        (" " + "a" * 4000 + " ", "a" * 4000),
        ("😀" * 4000, "😀" * 4000),  # code points, not UTF-16 units or bytes
    ],
)
def test_message_text_is_stripped(given: str, stored: str) -> None:
    assert check_message_text(given) == stored


@pytest.mark.parametrize(
    "value",
    ["", " ", "\n\t \u3000", "a" * 4001, " " + "😀" * 4001, "a\ud800", "a\x00b", *NOT_STRINGS],
)
def test_message_text_invalid(value: Any) -> None:
    assert invalid(check_message_text, value).field == "text"


def test_checks_name_the_field_they_are_given() -> None:
    err = invalid(check_message_text, "", field="body")
    assert err.field == "body"
    assert err.message.startswith("body ")


def test_note() -> None:
    assert check_note(None) is None
    assert check_note("   ") is None
    assert check_note(" he said so ") == "he said so"
    assert check_note("n" * 2000) == "n" * 2000
    for value in ["n" * 2001, 5, True, b"x", "\ud800"]:
        assert invalid(check_note, value).field == "note"


# --- room names and usernames -----------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "display", "key"),
    [
        ("Fika", "Fika", "fika"),
        ("  Fika Room  ", "Fika Room", "fika room"),
        ("ＦＩＫＡ", "FIKA", "fika"),  # full-width letters: NFKC
        ("\u00a0Fika\u00a0", "Fika", "fika"),  # NO-BREAK SPACE: NFKC makes it a space
        ("Ö", "Ö", "ö"),
        ("O\u0308rebro", "Örebro", "örebro"),  # combining diaeresis composes
        ("Straße", "Straße", "strasse"),
        ("Москва", "Москва", "москва"),
        ("東京 chat", "東京 chat", "東京 chat"),
        ("room_42.b-c", "room_42.b-c", "room_42.b-c"),
        ("٤٢", "٤٢", "٤٢"),  # Arabic-Indic digits (Nd)
        ("x²", "x2", "x2"),  # superscript two: NFKC
        ("r" * 64, "r" * 64, "r" * 64),
        (".", ".", "."),
    ],
)
def test_room_name(given: str, display: str, key: str) -> None:
    assert normalize_room_name(given) == (display, key)


def test_room_names_compare_without_case_or_width() -> None:
    keys = {
        normalize_room_name(name)[1] for name in ["STRASSE", "strasse", "Straße", "ＳＴＲＡＳＳＥ"]
    }
    assert keys == {"strasse"}


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "r" * 65,
        " " * 2000 + "r",
        "a/b",
        "a!b",
        "tab\there",
        "new\nline",
        "coffee ☕",
        "a\u200bb",  # ZERO WIDTH SPACE
        "a\x00",
        "a\ud800",
        *NOT_STRINGS,
    ],
)
def test_room_name_invalid(value: Any) -> None:
    assert invalid(normalize_room_name, value).field == "room"


@pytest.mark.parametrize(
    ("given", "name", "key"),
    [
        ("bob", "bob", "bob"),
        ("Bob_1.x-y", "Bob_1.x-y", "bob_1.x-y"),
        ("ÅsaÖ", "ÅsaÖ", "åsaö"),
        ("ｂｏｂ", "bob", "bob"),
        ("Bj\u00f6rn", "Björn", "björn"),
        ("u" * 32, "u" * 32, "u" * 32),
    ],
)
def test_username(given: str, name: str, key: str) -> None:
    assert check_username(given) == (name, key)


@pytest.mark.parametrize(
    "value",
    ["ab", "u" * 33, "bob smith", " bob", "bob ", "a@b", "bob!", "😀😀😀", "", *NOT_STRINGS],
)
def test_username_invalid(value: Any) -> None:
    assert invalid(check_username, value).field == "username"


# --- passwords, e-mail, birthdates ------------------------------------------------------


def test_password() -> None:
    assert check_password("12345678") == "12345678"
    assert check_password("  spaced out  ") == "  spaced out  "  # taken as given
    assert check_password("p" * 256) == "p" * 256
    for value in ["1234567", "p" * 257, "pass\ud800word", *NOT_STRINGS]:
        assert invalid(check_password, value).field == "password"


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("a@example.org", "a@example.org"),
        ("  Anna.B+chat@Example.org ", "Anna.B+chat@Example.org"),
        ("x@sub.domain.co.uk", "x@sub.domain.co.uk"),
        ("åsa@exempel.se", "åsa@exempel.se"),
    ],
)
def test_email(given: str, stored: str) -> None:
    assert check_email(given) == stored


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "plain",
        "a@b@example.org",
        "@example.org",
        "a@example",
        "a@.example.org",
        "a@example..org",
        "a@example.org.",
        "a b@example.org",
        "a@exa mple.org",
        "a@example.org\x07",
        "a" * 243 + "@example.org",  # 255 characters
        *NOT_STRINGS,
    ],
)
def test_email_invalid(value: Any) -> None:
    assert invalid(check_email, value).field == "email"


def test_email_of_254_characters_passes() -> None:
    email = "a" * 242 + "@example.org"
    assert len(email) == 254
    assert check_email(email) == email


@pytest.mark.parametrize(
    ("given", "born"),
    [
        ("2000-02-29", date(2000, 2, 29)),
        ("1900-01-01", date(1900, 1, 1)),
        ("2025-06-15", TODAY),
        ("2010-06-16", date(2010, 6, 16)),
    ],
)
def test_birthdate(given: str, born: date) -> None:
    assert check_birthdate(given, today=TODAY) == born


@pytest.mark.parametrize(
    "value",
    [
        "2001-02-29",
        "2000-13-01",
        "2000-00-10",
        "2000-01-32",
        "2000-1-01",
        "2000-01-1",
        "20000-01-01",
        " 2000-01-01",
        "2000-01-01 ",
        "2000/01/01",
        "2000-01-01T00:00:00",
        "２０００-01-01",  # full-width digits
        "١٩٩٠-01-01",  # Arabic-Indic digits
        "1899-12-31",
        "2025-06-16",
        "9999-12-31",
        date(2000, 1, 1),
        *NOT_STRINGS,
    ],
)
def test_birthdate_invalid(value: Any) -> None:
    assert invalid(check_birthdate, value, today=TODAY).field == "birthdate"


def test_birthdate_defaults_to_today_in_utc() -> None:
    assert check_birthdate("2000-01-01") == date(2000, 1, 1)
    invalid(check_birthdate, "2999-01-01")


@pytest.mark.parametrize(
    ("born", "today", "age"),
    [
        (date(2010, 6, 15), date(2025, 6, 15), 15),
        (date(2010, 6, 16), date(2025, 6, 15), 14),
        (date(2010, 5, 31), date(2025, 6, 1), 15),
        (date(2008, 2, 29), date(2023, 2, 28), 14),
        (date(2008, 2, 29), date(2023, 3, 1), 15),
        (date(2008, 2, 29), date(2024, 2, 29), 16),
        (date(2025, 6, 15), date(2025, 6, 15), 0),
    ],
)
def test_age_on(born: date, today: date, age: int) -> None:
    assert age_on(born, today) == age


@pytest.mark.parametrize(
    ("email", "key"),
    [
        ("John.Doe@Gmail.com", "johndoe@gmail.com"),
        ("j.o.h.n.doe+chat@gmail.com", "johndoe@gmail.com"),
        ("johndoe+a+b@googlemail.com", "johndoe@gmail.com"),
        ("JohnDoe@GoogleMail.COM", "johndoe@gmail.com"),
        ("Anna.B+chat@Example.org", "anna.b+chat@example.org"),
        ("  x@y.se ", "x@y.se"),
        ("no-at-sign", "no-at-sign"),
    ],
)
def test_normalize_email_key(email: str, key: str) -> None:
    assert normalize_email_key(email) == key


def test_gmail_variants_share_a_key() -> None:
    variants = ["johndoe@gmail.com", "John.Doe@gmail.com", "johndoe+x@googlemail.com"]
    assert len({normalize_email_key(v) for v in variants}) == 1
    assert normalize_email_key("john.doe@example.org") != normalize_email_key("johndoe@example.org")


# --- ids and friends ----------------------------------------------------------------------


def test_cmid() -> None:
    assert check_cmid("c") == "c"
    assert check_cmid(" " * 64) == " " * 64
    for value in ["", "c" * 65, "c\x00", "\udc00", *NOT_STRINGS]:
        assert invalid(check_cmid, value).field == "cmid"


@pytest.mark.parametrize(
    ("check", "low"),
    [(check_id, 1), (check_seq, 0)],
)
def test_id_and_seq(check: Callable[[Any, str], int], low: int) -> None:
    assert check(low, "f") == low
    assert check(MAX_ID, "f") == MAX_ID
    for value in [low - 1, MAX_ID + 1, -(2**70), *NOT_INTS]:
        assert invalid(check, value, "f").field == "f"


def test_missing_value_says_required() -> None:
    assert invalid(check_id, None, "conv").message == "conv is required"
    assert invalid(check_id, True, "conv").message == "conv must be an integer"


def test_limit() -> None:
    assert check_limit(None) == 100
    assert check_limit(1) == 1
    assert check_limit(500) == 500
    assert check_limit(None, default=7, maximum=1000) == 7
    assert check_limit(1000, maximum=1000) == 1000
    for value in [0, 501, -1, True, 1.0, "10"]:
        assert invalid(check_limit, value).field == "limit"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, 1), (MAX_ID, MAX_ID), ("bob", "bob"), (" Bob ", " Bob "), ("u" * 64, "u" * 64)],
)
def test_user_ref(value: Any, expected: int | str) -> None:
    assert check_user_ref(value) == expected


@pytest.mark.parametrize(
    "value", [0, -1, MAX_ID + 1, True, False, 1.0, "", "u" * 65, "a\x00", "\ud800", b"bob", None]
)
def test_user_ref_invalid(value: Any) -> None:
    assert invalid(check_user_ref, value).field == "user"


def test_parse_query_int() -> None:
    assert parse_query_int(None, "after") is None
    assert parse_query_int("0", "after") == 0
    assert parse_query_int("0042", "after") == 42
    assert parse_query_int("9" * 19, "after") == int("9" * 19)
    for value in ["", "-1", "+1", "1.0", " 1", "1e3", "٣", "9" * 20]:
        assert invalid(parse_query_int, value, "after").field == "after"
