"""parse_frame: client frame maps into their dataclasses, or ProtocolError."""

import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.frames import (
    CLIENT_FRAME_TYPES,
    REPORT_CATEGORIES,
    Auth,
    Block,
    ClientFrame,
    DmOpen,
    Logout,
    ModSubscribe,
    Ping,
    Report,
    RoomJoin,
    RoomLeave,
    Send,
    Sync,
    Unblock,
    parse_frame,
)
from protocol.limits import MAX_ID


def refused(obj: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse_frame(obj)
    return caught.value


@pytest.mark.parametrize(
    ("obj", "frame"),
    [
        ({"t": "auth", "token": "tok", "rid": 1}, Auth("tok", 1)),
        ({"t": "dm.open", "user": 5}, DmOpen(5)),
        ({"t": "dm.open", "user": "Anna"}, DmOpen("Anna")),
        ({"t": "room.join", "room": " Fika ", "rid": "j"}, RoomJoin("Fika", "fika", "j")),
        ({"t": "room.leave", "conv": 3}, RoomLeave(3)),
        (
            {"t": "send", "conv": 3, "text": "  hej  ", "cmid": "c1", "rid": 9},
            Send(3, "hej", "c1", 9),
        ),
        ({"t": "sync", "conv": 3}, Sync(3, 0, 100)),
        ({"t": "sync", "conv": 3, "after": 0, "limit": 500}, Sync(3, 0, 500)),
        ({"t": "sync", "conv": 3, "after": 41, "limit": 1, "rid": 2}, Sync(3, 41, 1, 2)),
        ({"t": "block", "user": 8}, Block(8)),
        ({"t": "unblock", "user": "bob"}, Unblock("bob")),
        ({"t": "report", "category": "spam", "msg": 12}, Report("spam", msg=12)),
        (
            {"t": "report", "category": "minor_sexual", "user": "x", "conv": 2, "note": " hm "},
            Report("minor_sexual", conv=2, user="x", note="hm"),
        ),
        ({"t": "ping", "rid": "p"}, Ping("p")),
        ({"t": "mod.subscribe"}, ModSubscribe()),
        ({"t": "logout", "rid": 4}, Logout(4)),
    ],
)
def test_parse_good_frames(obj: dict[str, Any], frame: ClientFrame) -> None:
    parsed = parse_frame(obj)
    assert parsed == frame
    assert type(parsed) is type(frame)
    assert parsed.TYPE == obj["t"]


def test_every_type_has_a_frame_class() -> None:
    assert CLIENT_FRAME_TYPES == {
        "auth",
        "dm.open",
        "room.join",
        "room.leave",
        "send",
        "sync",
        "block",
        "unblock",
        "report",
        "ping",
        "mod.subscribe",
        "logout",
    }


def test_frames_are_frozen_and_slotted() -> None:
    frame = Send(1, "hi", "c")
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.text = "changed"  # type: ignore[misc]
    assert not hasattr(frame, "__dict__")


def test_unknown_fields_are_ignored() -> None:
    obj = {"t": "ping", "extra": [1, 2], "x": {"y": None}, "rid": 3}
    assert parse_frame(obj) == Ping(3)


@pytest.mark.parametrize(
    ("rid", "echoed"),
    [
        (True, None),
        (False, None),
        ("r" * 65, None),
        ("", None),
        (1.5, None),
        (MAX_ID + 1, None),
        ([1], None),
        (b"r", None),
        (-3, -3),
        ("r" * 64, "r" * 64),
    ],
)
def test_rid_of_the_wrong_form_is_ignored(rid: Any, echoed: Any) -> None:
    assert parse_frame({"t": "ping", "rid": rid}).rid == echoed
    assert refused({"t": "nope", "rid": rid}).rid == echoed


def test_envelope_errors() -> None:
    assert refused([{"t": "ping"}]).code is ErrorCode.BAD_FRAME
    assert refused("ping").code is ErrorCode.BAD_FRAME
    missing = refused({"rid": 4})
    assert (missing.code, missing.rid) == (ErrorCode.BAD_FRAME, 4)
    assert refused({"t": 5}).code is ErrorCode.BAD_FRAME
    assert refused({"t": ["ping"]}).code is ErrorCode.BAD_FRAME


def test_unknown_type() -> None:
    err = refused({"t": "dance", "rid": "r1"})
    assert err.code is ErrorCode.UNKNOWN_TYPE
    assert err.to_frame() == {
        "t": "error",
        "code": "unknown_type",
        "message": "unknown frame type",
        "rid": "r1",
    }
    assert refused({"t": "Send"}).code is ErrorCode.UNKNOWN_TYPE
    assert refused({"t": ""}).code is ErrorCode.UNKNOWN_TYPE


SEND = {"t": "send", "conv": 1, "text": "hi", "cmid": "c1"}


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"t": "auth"}, "token"),
        ({"t": "auth", "token": ""}, "token"),
        ({"t": "auth", "token": "t" * 513}, "token"),
        ({"t": "auth", "token": 123}, "token"),
        ({"t": "dm.open"}, "user"),
        ({"t": "dm.open", "user": True}, "user"),
        ({"t": "dm.open", "user": 0}, "user"),
        ({"t": "dm.open", "user": ""}, "user"),
        ({"t": "dm.open", "user": 2.0}, "user"),
        ({"t": "room.join"}, "room"),
        ({"t": "room.join", "room": "a/b"}, "room"),
        ({"t": "room.join", "room": "   "}, "room"),
        ({"t": "room.join", "room": "r" * 65}, "room"),
        ({"t": "room.join", "room": b"bin"}, "room"),
        ({"t": "room.leave", "conv": "3"}, "conv"),
        ({**SEND, "conv": None}, "conv"),
        ({**SEND, "conv": "1"}, "conv"),
        ({**SEND, "conv": True}, "conv"),
        ({**SEND, "conv": 1.0}, "conv"),
        ({**SEND, "conv": 0}, "conv"),
        ({**SEND, "conv": MAX_ID + 1}, "conv"),
        ({**SEND, "text": None}, "text"),
        ({**SEND, "text": 5}, "text"),
        ({**SEND, "text": b"hi"}, "text"),
        ({**SEND, "text": msgpack.ExtType(1, b"hi")}, "text"),
        ({**SEND, "text": " \n\t "}, "text"),
        ({**SEND, "text": " " + "x" * 4001 + " "}, "text"),
        ({**SEND, "cmid": ""}, "cmid"),
        ({**SEND, "cmid": "c" * 65}, "cmid"),
        ({**SEND, "cmid": 12}, "cmid"),
        ({"t": "sync", "conv": 1, "after": -1}, "after"),
        ({"t": "sync", "conv": 1, "after": "0"}, "after"),
        ({"t": "sync", "conv": 1, "limit": 0}, "limit"),
        ({"t": "sync", "conv": 1, "limit": 501}, "limit"),
        ({"t": "sync", "conv": 1, "limit": True}, "limit"),
        ({"t": "sync", "after": 1}, "conv"),
        ({"t": "block", "user": [1]}, "user"),
        ({"t": "unblock"}, "user"),
        ({"t": "report", "msg": 1}, "category"),
        ({"t": "report", "category": "rude", "msg": 1}, "category"),
        ({"t": "report", "category": ["spam"], "msg": 1}, "category"),
        ({"t": "report", "category": "spam"}, "msg"),
        ({"t": "report", "category": "spam", "note": "just a note"}, "msg"),
        ({"t": "report", "category": "spam", "msg": "12"}, "msg"),
        ({"t": "report", "category": "spam", "conv": False}, "conv"),
        ({"t": "report", "category": "spam", "user": 0}, "user"),
        ({"t": "report", "category": "spam", "msg": 1, "note": "n" * 2001}, "note"),
        ({"t": "report", "category": "spam", "msg": 1, "note": 5}, "note"),
    ],
)
def test_field_errors_are_invalid_naming_the_field(obj: dict[str, Any], field: str) -> None:
    err = refused({**obj, "rid": 77})
    assert err.code is ErrorCode.INVALID
    assert err.field == field
    assert err.is_bad_frame
    frame = err.to_frame()
    assert (frame["field"], frame["rid"]) == (field, 77)


def test_every_report_category_parses() -> None:
    for category in REPORT_CATEGORIES:
        assert parse_frame({"t": "report", "category": category, "msg": 1}) == Report(
            category, msg=1
        )


def test_send_error_echoes_a_good_cmid() -> None:
    err = refused({**SEND, "text": "", "rid": 1})
    assert err.to_frame() == {
        "t": "error",
        "code": "invalid",
        "message": "text must not be empty or only white space",
        "field": "text",
        "rid": 1,
        "cmid": "c1",
    }
    assert refused({**SEND, "cmid": "c" * 65}).cmid is None
    assert refused({**SEND, "cmid": 5}).cmid is None
    assert refused({"t": "sync", "conv": "x", "cmid": "c1"}).cmid is None  # only for send


def test_send_text_limit_counts_after_stripping() -> None:
    frame = parse_frame({**SEND, "text": "\n " + "x" * 4000 + " \n"})
    assert isinstance(frame, Send)
    assert frame.text == "x" * 4000


# --- property: arbitrary maps -----------------------------------------------------------

FIELD_NAMES = ["t", "rid", "token", "user", "room", "conv", "text", "cmid", "after", "limit"]
FIELD_NAMES += ["category", "msg", "note"]
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.text(st.characters(codec=None, exclude_categories=()), max_size=4)
    | st.binary(max_size=4)
    | st.sampled_from(["", " ", "x" * 70, "spam", "0", "Fika"])
    | st.sampled_from([0, 1, -1, MAX_ID, MAX_ID + 1, 2**64]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=6,
)
frame_maps = st.builds(
    lambda obj, t: obj if t is None else {**obj, "t": t},
    st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=5), values, max_size=8),
    st.sampled_from([*sorted(CLIENT_FRAME_TYPES), None]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame_maps)
def test_parse_frame_raises_only_protocol_error(obj: dict[Any, Any]) -> None:
    try:
        frame = parse_frame(obj)
    except ProtocolError as err:
        assert isinstance(err.code, ErrorCode)
    else:
        assert frame.TYPE == obj["t"]
