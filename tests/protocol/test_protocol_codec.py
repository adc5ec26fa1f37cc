"""The JSON and MessagePack codecs, negotiate() and extract_rid()."""

import json
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.codec import (
    JSON_CODEC,
    MSGPACK_CODEC,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Codec,
    extract_rid,
    negotiate,
)
from protocol.codes import CloseCode, ErrorCode
from protocol.errors import ProtocolError
from protocol.limits import MAX_ID, MAX_JSON_DEPTH

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# CPU seconds (not wall time, so that a loaded machine does not fail the test). Generous:
# these take milliseconds; the bound catches a quadratic scan or recursion into the parser.
HOSTILE_DECODE_CPU_SECONDS = 1.0


def json_error(data: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        JSON_CODEC.decode(data)
    return caught.value


def msgpack_error(data: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        MSGPACK_CODEC.decode(data)
    return caught.value


def nested(depth: int) -> str:
    """A JSON frame whose containers nest `depth` levels, the frame map included."""
    return '{"t":"x","a":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def nested_msgpack(depth: int) -> bytes:
    value: Any = []
    for _ in range(depth - 2):
        value = [value]
    return msgpack.packb({"t": "x", "a": value})


# --- JSON envelope ---------------------------------------------------------------------


def test_json_decodes_a_frame() -> None:
    frame = JSON_CODEC.decode('{"t":"send","conv":1,"text":"hej då","rid":"r1"}')
    assert frame == {"t": "send", "conv": 1, "text": "hej då", "rid": "r1"}


@pytest.mark.parametrize(
    ("data", "message_part"),
    [
        (b'{"t":"ping"}', "binary frame"),
        (bytearray(b'{"t":"ping"}'), "binary frame"),
        ("", "not a JSON value"),
        ("{", "not a JSON value"),
        ('{"t":"ping"} {}', "not a JSON value"),
        ("{'t':'ping'}", "not a JSON value"),
        ('[{"t":"ping"}]', "must be a map"),
        ('"ping"', "must be a map"),
        ("null", "must be a map"),
        ("{}", "string `t`"),
        ('{"t":1}', "string `t`"),
        ('{"t":null}', "string `t`"),
        ('{"t":["ping"]}', "string `t`"),
        ('{"t":"x","n":NaN}', "NaN"),
        ('{"t":"x","n":Infinity}', "NaN"),
        ('{"t":"x","n":-Infinity}', "NaN"),
        ('{"t":"x","n":1e999}', "NaN"),
        ('{"t":"x","n":' + "9" * 5000 + "}", "not a JSON value"),
        ("\ufeff" + '{"t":"ping"}', "not a JSON value"),
    ],
)
def test_json_bad_frames(data: Any, message_part: str) -> None:
    err = json_error(data)
    assert err.code is ErrorCode.BAD_FRAME
    assert message_part in err.message


def test_json_bad_frame_echoes_a_good_rid_of_a_map() -> None:
    assert json_error('{"rid":7}').to_frame() == {
        "t": "error",
        "code": "bad_frame",
        "message": "a frame needs a string `t`",
        "rid": 7,
    }
    assert json_error('{"rid":true}').rid is None
    assert json_error('{"rid":"' + "r" * 65 + '"}').rid is None


def test_json_duplicate_keys_last_wins_and_large_ints_pass() -> None:
    assert JSON_CODEC.decode('{"t":"a","t":"b","n":123456789012345678901234567890}') == {
        "t": "b",
        "n": 123456789012345678901234567890,
    }


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ('{"t":"send","text":"\\ud800"}', "text"),
        ('{"t":"send","text":"ok \\uDFFF ok"}', "text"),
        ('{"t":"send","text":"\\ude00\\ud83d"}', "text"),  # a pair in the wrong order
        ('{"t":"\\ud800"}', "t"),
        ('{"t":"x","a":{"b":[1,"\\udbff"]}}', "a.b[1]"),
        ('{"t":"x","k\\udc00":1}', "k\ufffd"),
        ('{"t":"x","a":[{"\\ud800":1}]}', "a[0].\ufffd"),
    ],
)
def test_json_lone_surrogate_is_invalid_naming_the_field(data: str, field: str) -> None:
    err = json_error(data)
    assert err.code is ErrorCode.INVALID
    assert err.field == field
    json.dumps(err.to_frame(), ensure_ascii=False).encode("utf-8")  # sendable as UTF-8


def test_json_surrogate_error_echoes_rid_but_not_a_bad_one() -> None:
    assert json_error('{"t":"x","rid":5,"a":"\\ud800"}').to_frame()["rid"] == 5
    assert "rid" not in json_error('{"t":"x","rid":"\\ud800"}').to_frame()


def test_json_literal_surrogate_in_text_is_invalid() -> None:
    # Not possible from a UTF-8 WebSocket message, but decode() takes any str.
    assert json_error('{"t":"x","a":"\ud800"}').field == "a"


def test_json_surrogate_pairs_and_escaped_backslashes_are_fine() -> None:
    assert JSON_CODEC.decode('{"t":"x","a":"\\ud83d\\ude00"}')["a"] == "😀"
    assert JSON_CODEC.decode('{"t":"x","a":"\\\\ud800"}')["a"] == "\\ud800"


def test_json_depth_limit_is_32_levels() -> None:
    assert JSON_CODEC.decode(nested(MAX_JSON_DEPTH))["t"] == "x"
    err = json_error(nested(MAX_JSON_DEPTH + 1))
    assert err.code is ErrorCode.BAD_FRAME
    assert "deeper than 32" in err.message


def test_json_nested_1000_deep_is_bad_frame() -> None:
    assert json_error(nested(1000)).code is ErrorCode.BAD_FRAME
    assert json_error("[" * 1000 + "]" * 1000).code is ErrorCode.BAD_FRAME
    assert json_error('{"t":"x","a":' + "{" * 1000).code is ErrorCode.BAD_FRAME


def test_json_brackets_inside_strings_do_not_count() -> None:
    text = "[" * 100 + '"{\\' * 100 + "}"  # quotes and backslashes, escaped in the JSON
    frame = JSON_CODEC.decode(json.dumps({"t": "x", "a": text, "b": ["]" * 50, "[" * 50]}))
    assert frame["a"] == text


@pytest.mark.parametrize(
    "data",
    [
        "[" * 1_000_000,
        "{" * 1_000_000,
        '{"t":"x","a":' + "[" * 1_000_000,
        "[]" * 100_000 + "[" * 40,
        '["' + '\\"' * 300_000 + "[" * 40,  # an unterminated string of escapes
        '["' + '\\"' * 300_000 + "\\",
        '"' * 1_000_000 + "[" * 40,
    ],
)
def test_json_hostile_nesting_fails_fast(data: str) -> None:
    started = time.process_time()
    err = json_error(data)
    elapsed = time.process_time() - started
    assert err.code is ErrorCode.BAD_FRAME
    assert elapsed < HOSTILE_DECODE_CPU_SECONDS


# --- MessagePack envelope ---------------------------------------------------------------


def test_msgpack_decodes_a_frame_from_any_bytes_like() -> None:
    packed = msgpack.packb({"t": "send", "conv": 1, "text": "hej då"})
    bytes_likes: list[Any] = [packed, bytearray(packed), memoryview(packed)]
    for data in bytes_likes:
        assert MSGPACK_CODEC.decode(data) == {"t": "send", "conv": 1, "text": "hej då"}


@pytest.mark.parametrize(
    ("data", "message_part"),
    [
        ('{"t":"ping"}', "text frame"),
        (b"", "not MessagePack"),
        (b"\xc1", "not MessagePack"),  # a reserved byte
        (msgpack.packb({"t": "ping"})[:-1], "not MessagePack"),
        (msgpack.packb({"t": "ping"}) + b"\x00", "not MessagePack"),
        (b"\x91" * 5000 + b"\xc0", "not MessagePack"),  # past the unpacker's stack
        (msgpack.packb([{"t": "ping"}]), "must be a map"),
        (msgpack.packb("ping"), "must be a map"),
        (msgpack.packb({}), "string `t`"),
        (msgpack.packb({"t": 1}), "string `t`"),
        (msgpack.packb({"t": b"ping"}, use_bin_type=True), "string `t`"),
        (msgpack.packb({1: 2, "t": "x"}), "key that is not a string"),
        (msgpack.packb({b"t": "x"}, use_bin_type=True), "keys must be strings"),
        (msgpack.packb({"t": "x", "a": {"b": {b"k": 1}}}, use_bin_type=True), "keys must be"),
        (msgpack.packb({"t": "x", "a": [{3: 1}]}), "key that is not a string"),
        (nested_msgpack(MAX_JSON_DEPTH + 1), "deeper than 32"),
        (nested_msgpack(1000), "deeper than 32"),
    ],
)
def test_msgpack_bad_frames(data: Any, message_part: str) -> None:
    err = msgpack_error(data)
    assert err.code is ErrorCode.BAD_FRAME
    assert message_part in err.message


def test_msgpack_depth_limit_is_32_levels() -> None:
    assert MSGPACK_CODEC.decode(nested_msgpack(MAX_JSON_DEPTH))["t"] == "x"


def test_msgpack_bad_frame_echoes_a_good_rid_of_a_map() -> None:
    assert msgpack_error(msgpack.packb({"rid": "abc"})).rid == "abc"
    bytes_key = msgpack.packb({"rid": 3, "t": "x", "a": {"b": {b"k": 1}}}, use_bin_type=True)
    assert msgpack_error(bytes_key).rid == 3
    assert msgpack_error(nested_msgpack(40)).rid is None  # no rid in that frame
    assert msgpack_error(msgpack.packb({"rid": False})).rid is None


def str_with_raw_bytes(raw: bytes) -> bytes:
    """A msgpack str header and `raw` as its content, valid UTF-8 or not."""
    assert len(raw) < 32
    return bytes([0xA0 | len(raw)]) + raw


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"\x82" + str_with_raw_bytes(b"t") + str_with_raw_bytes(b"x")
         + str_with_raw_bytes(b"text") + str_with_raw_bytes(b"\xff\xfe"), "text"),
        (b"\x81" + str_with_raw_bytes(b"t") + str_with_raw_bytes(b"\xed\xa0\x80"), "t"),
        (b"\x82" + str_with_raw_bytes(b"t") + str_with_raw_bytes(b"x")
         + str_with_raw_bytes(b"k\xc3") + b"\x01", "k\ufffd"),
        (b"\x82" + str_with_raw_bytes(b"t") + str_with_raw_bytes(b"x")
         + str_with_raw_bytes(b"a") + b"\x92\x01" + str_with_raw_bytes(b"\x80"), "a[1]"),
    ],
)  # fmt: skip
def test_msgpack_invalid_utf8_is_invalid_naming_the_field(data: bytes, field: str) -> None:
    err = msgpack_error(data)
    assert err.code is ErrorCode.INVALID
    assert err.field == field


def test_msgpack_invalid_utf8_with_a_broken_envelope_is_bad_frame() -> None:
    no_t = b"\x81" + str_with_raw_bytes(b"a") + str_with_raw_bytes(b"\xff")
    assert msgpack_error(no_t).code is ErrorCode.BAD_FRAME
    not_map = b"\x91" + str_with_raw_bytes(b"\xff")
    assert msgpack_error(not_map).code is ErrorCode.BAD_FRAME


def test_msgpack_bin_and_ext_values_decode_for_the_validators_to_refuse() -> None:
    frame = MSGPACK_CODEC.decode(
        msgpack.packb(
            {"t": "x", "b": b"\x00\xff", "e": msgpack.ExtType(5, b"ab"), "n": 2**64 - 1},
            use_bin_type=True,
        )
    )
    assert frame["b"] == b"\x00\xff"
    assert frame["e"] == msgpack.ExtType(5, b"ab")
    assert frame["n"] == 2**64 - 1
    stamp = MSGPACK_CODEC.decode(msgpack.packb({"t": "x", "s": msgpack.Timestamp(1, 0)}))
    assert stamp["s"] == msgpack.Timestamp(1, 0)


# --- encoding -----------------------------------------------------------------------------


def test_codec_attributes() -> None:
    codecs: list[Codec] = [JSON_CODEC, MSGPACK_CODEC]
    assert [(c.name, c.binary) for c in codecs] == [
        (SUBPROTOCOL_JSON, False),
        (SUBPROTOCOL_MSGPACK, True),
    ]
    assert SUBPROTOCOL_JSON == "chatd.v1.json"
    assert SUBPROTOCOL_MSGPACK == "chatd.v1.msgpack"


def test_json_encode_is_compact_text_without_ascii_escapes() -> None:
    encoded = JSON_CODEC.encode({"t": "msg", "text": "hej då 😀", "n": [1, None, True]})
    assert encoded == '{"t":"msg","text":"hej då 😀","n":[1,null,true]}'


def test_json_encode_refuses_nan_rather_than_sending_non_json() -> None:
    with pytest.raises(ValueError):
        JSON_CODEC.encode({"t": "x", "n": float("nan")})


def test_msgpack_encode_is_bytes_with_bin_type() -> None:
    encoded = MSGPACK_CODEC.encode({"t": "x", "b": b"\x01"})
    assert isinstance(encoded, bytes)
    assert msgpack.unpackb(encoded) == {"t": "x", "b": b"\x01"}
    assert b"\xc4\x01\x01" in encoded  # bin 8, not a raw str


def test_msgpack_encoder_recovers_after_a_failed_frame() -> None:
    with pytest.raises(TypeError):
        MSGPACK_CODEC.encode({"t": "x", "o": object()})
    assert msgpack.unpackb(MSGPACK_CODEC.encode({"t": "ok"})) == {"t": "ok"}


@pytest.mark.parametrize("codec", [JSON_CODEC, MSGPACK_CODEC], ids=["json", "msgpack"])
def test_encode_takes_any_mapping_and_enum_values(codec: Codec) -> None:
    frame: Mapping[str, Any] = MappingProxyType(
        {"t": "error", "code": ErrorCode.INVALID, "close": CloseCode.KICKED}
    )
    decoded = codec.decode(codec.encode(frame))
    assert decoded == {"t": "error", "code": "invalid", "close": 4003}
    assert type(decoded["code"]) is str and type(decoded["close"]) is int


# --- properties ---------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)
frames = st.builds(
    lambda t, rest: {**rest, "t": t},
    st.text(max_size=12),
    st.dictionaries(st.text(max_size=8), json_values, max_size=5),
)


@FUZZ
@given(frames)
def test_round_trip_json(frame: dict[str, Any]) -> None:
    encoded = JSON_CODEC.encode(frame)
    assert isinstance(encoded, str)
    assert JSON_CODEC.decode(encoded) == frame


@FUZZ
@given(frames)
def test_round_trip_msgpack(frame: dict[str, Any]) -> None:
    encoded = MSGPACK_CODEC.encode(frame)
    assert isinstance(encoded, bytes)
    assert MSGPACK_CODEC.decode(encoded) == frame


def decodes_or_protocol_error(codec: Codec, data: Any) -> None:
    try:
        frame = codec.decode(data)
    except ProtocolError as err:
        assert isinstance(err.code, ErrorCode)
        assert err.message
    else:
        assert type(frame) is dict and isinstance(frame["t"], str)


# Text made of JSON's own punctuation, escapes and surrogates, to reach past the parser.
json_ish = st.text(
    alphabet=st.sampled_from(list('{}[]":,\\ u0d8fFtnrue1-.eE')) | st.characters(codec=None),
    max_size=80,
)
any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=80)


@FUZZ
@given(st.one_of(json_ish, any_text, st.binary(max_size=40)))
def test_json_decode_raises_only_protocol_error(data: str | bytes) -> None:
    decodes_or_protocol_error(JSON_CODEC, data)


@FUZZ
@given(
    frames, st.lists(st.tuples(st.integers(0, 200), st.sampled_from(list('"\\[]{},:'))), max_size=6)
)
def test_json_decode_of_mangled_frames_raises_only_protocol_error(
    frame: dict[str, Any], edits: list[tuple[int, str]]
) -> None:
    text = JSON_CODEC.encode(frame)
    for position, char in edits:
        position %= len(text)
        text = text[:position] + char + text[position + 1 :]
    decodes_or_protocol_error(JSON_CODEC, text)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=80),
        st.binary(max_size=60).map(lambda tail: b"\x82\xa1t\xa1x" + tail),
        st.binary(max_size=60).map(lambda tail: b"\xde\x00\x03" + tail),
        st.text(max_size=10),
    )
)
def test_msgpack_decode_raises_only_protocol_error(data: bytes | str) -> None:
    decodes_or_protocol_error(MSGPACK_CODEC, data)


@FUZZ
@given(frames, st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6))
def test_msgpack_decode_of_mangled_frames_raises_only_protocol_error(
    frame: dict[str, Any], edits: list[tuple[int, int]]
) -> None:
    data = bytearray(MSGPACK_CODEC.encode(frame))
    for position, byte in edits:
        data[position % len(data)] = byte
    decodes_or_protocol_error(MSGPACK_CODEC, bytes(data))


# --- negotiate and extract_rid ----------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        ([], (MSGPACK_CODEC, None)),
        ((), (MSGPACK_CODEC, None)),
        ([""], (MSGPACK_CODEC, None)),
        (["chatd.v1.msgpack"], (MSGPACK_CODEC, "chatd.v1.msgpack")),
        (["chatd.v1.json"], (JSON_CODEC, "chatd.v1.json")),
        (["chatd.v1.json", "chatd.v1.msgpack"], (JSON_CODEC, "chatd.v1.json")),
        (["chatd.v1.msgpack", "chatd.v1.json"], (MSGPACK_CODEC, "chatd.v1.msgpack")),
        (["graphql-ws", " chatd.v1.json "], (JSON_CODEC, "chatd.v1.json")),
        (["graphql-ws"], None),
        (["chatd.v2.json", "CHATD.V1.JSON"], None),
    ],
)
def test_negotiate(offered: list[str], expected: tuple[Codec, str | None] | None) -> None:
    assert negotiate(offered) == expected


@pytest.mark.parametrize(
    ("obj", "rid"),
    [
        ({"rid": 0}, 0),
        ({"rid": 7}, 7),
        ({"rid": -5}, -5),
        ({"rid": MAX_ID}, MAX_ID),
        ({"rid": -MAX_ID}, -MAX_ID),
        ({"rid": MAX_ID + 1}, None),
        ({"rid": "a"}, "a"),
        ({"rid": "r" * 64}, "r" * 64),
        ({"rid": "r" * 65}, None),
        ({"rid": ""}, None),
        ({"rid": "\ud800"}, None),
        ({"rid": True}, None),
        ({"rid": False}, None),
        ({"rid": 1.0}, None),
        ({"rid": None}, None),
        ({"rid": [1]}, None),
        ({"rid": b"ab"}, None),
        ({}, None),
        ([("rid", 1)], None),
        ("rid", None),
        (None, None),
    ],
)
def test_extract_rid(obj: Any, rid: Any) -> None:
    found = extract_rid(obj)
    assert found == rid
    assert type(found) is type(rid)
