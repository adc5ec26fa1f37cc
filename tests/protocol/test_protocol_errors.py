"""ProtocolError, error codes and close codes."""

from protocol.codes import BAD_FRAME_CODES, CloseCode, ErrorCode
from protocol.errors import ProtocolError


def test_error_code_values_are_the_contract() -> None:
    assert [code.value for code in ErrorCode] == [
        "bad_frame",
        "unknown_type",
        "invalid",
        "unauthenticated",
        "forbidden",
        "not_found",
        "not_member",
        "blocked",
        "rate_limited",
        "unavailable",
        "internal",
    ]
    assert str(ErrorCode.NOT_MEMBER) == "not_member"


def test_close_code_values_are_the_contract() -> None:
    assert {code.name: int(code) for code in CloseCode} == {
        "NORMAL": 1000,
        "TOO_MANY_BAD_FRAMES": 1008,
        "TOO_LARGE": 1009,
        "INTERNAL": 1011,
        "RESTARTING": 1012,
        "AUTH_FAILED": 4001,
        "KICKED": 4003,
        "BANNED": 4004,
        "RATE_ABUSE": 4008,
        "TOO_SLOW": 4009,
    }


def test_bad_frame_codes() -> None:
    assert BAD_FRAME_CODES == {ErrorCode.BAD_FRAME, ErrorCode.UNKNOWN_TYPE, ErrorCode.INVALID}
    assert ProtocolError(ErrorCode.UNKNOWN_TYPE, "x").is_bad_frame
    assert not ProtocolError(ErrorCode.FORBIDDEN, "x").is_bad_frame


def test_to_frame_minimal() -> None:
    err = ProtocolError(ErrorCode.BAD_FRAME, "not a map")
    assert (err.code, err.message, err.field, str(err)) == (
        ErrorCode.BAD_FRAME,
        "not a map",
        None,
        "not a map",
    )
    assert err.to_frame() == {"t": "error", "code": "bad_frame", "message": "not a map"}
    assert type(err.to_frame()["code"]) is str


def test_to_frame_with_field_rid_and_cmid() -> None:
    err = ProtocolError(ErrorCode.INVALID, "text is required", field="text")
    assert err.to_frame(rid=0, cmid="c1") == {
        "t": "error",
        "code": "invalid",
        "message": "text is required",
        "field": "text",
        "rid": 0,
        "cmid": "c1",
    }


def test_to_frame_falls_back_to_the_rid_and_cmid_the_error_carries() -> None:
    err = ProtocolError(ErrorCode.INVALID, "m", field="f", rid="r", cmid="c")
    assert err.to_frame()["rid"] == "r"
    assert err.to_frame()["cmid"] == "c"
    assert err.to_frame(rid=5, cmid="d")["rid"] == 5
    assert err.to_frame(rid=5, cmid="d")["cmid"] == "d"
