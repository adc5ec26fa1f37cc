"""Builders of server frames, and how they travel through both codecs."""

from typing import Any

import pytest

from protocol import server_frames as sf
from protocol.codec import JSON_CODEC, MSGPACK_CODEC
from protocol.codes import ErrorCode

BOB = sf.member(2, "bob")
CONV = sf.conversation(5, "dm", "bob", [sf.member(1, "anna"), BOB], 17)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            sf.ready({"id": 1, "username": "anna", "age": 15, "role": "member"}, 9, "n1", 1000,
                     [CONV], 1),
            {"t": "ready", "user": {"id": 1, "username": "anna", "age": 15, "role": "member"},
             "session": 9, "node": "n1", "server_time": 1000, "conversations": [CONV], "rid": 1},
        ),
        (
            sf.conv_frame(CONV, "r"),
            {"t": "conv", "conv": 5, "kind": "dm", "title": "bob",
             "members": [{"id": 1, "username": "anna"}, {"id": 2, "username": "bob"}],
             "last_seq": 17, "rid": "r"},
        ),
        (sf.conv_frame(CONV)["conv"], 5),
        (sf.left(5), {"t": "left", "conv": 5}),
        (sf.left(5, rid=3), {"t": "left", "conv": 5, "rid": 3}),
        (
            sf.ack(5, "c1", 100, 18, 1234, rid=0),
            {"t": "ack", "conv": 5, "cmid": "c1", "id": 100, "seq": 18, "ts": 1234, "rid": 0},
        ),
        (
            sf.msg(5, 100, 18, 2, "bob", "hej", 1234, "c1"),
            {"t": "msg", "conv": 5, "id": 100, "seq": 18, "from": {"id": 2, "username": "bob"},
             "text": "hej", "ts": 1234, "cmid": "c1"},
        ),
        (
            sf.msg(5, 100, 18, 2, "bob", "secret", 1234, "c1", rid=4, removed=True),
            {"t": "msg", "conv": 5, "id": 100, "seq": 18, "from": {"id": 2, "username": "bob"},
             "text": None, "ts": 1234, "cmid": "c1", "removed": True, "rid": 4},
        ),
        (sf.synced(5, 18, False, 4), {"t": "synced", "conv": 5, "last_seq": 18, "more": False,
                                      "rid": 4}),
        (sf.ok(None), {"t": "ok"}),
        (sf.ok("b1"), {"t": "ok", "rid": "b1"}),
        (sf.pong(99, 1), {"t": "pong", "ts": 99, "rid": 1}),
        (sf.reported(7, "open", 2), {"t": "reported", "report": {"id": 7, "status": "open"},
                                     "rid": 2}),
        (sf.notice("Be kind.", "warning"), {"t": "notice", "text": "Be kind.", "kind": "warning"}),
        (sf.removed(5, 100, 18), {"t": "removed", "conv": 5, "id": 100, "seq": 18}),
        (sf.kicked("spam"), {"t": "kicked", "reason": "spam"}),
        (sf.mod_subscribed(1), {"t": "mod.subscribed", "rid": 1}),
        (
            sf.mod_event({"kind": "alert", "ts": 5, "alert": {"kind": "registration_surge"}}),
            {"t": "mod.event", "event": {"kind": "alert", "ts": 5,
                                         "alert": {"kind": "registration_surge"}}},
        ),
        (sf.error(ErrorCode.NOT_MEMBER, "not a member"),
         {"t": "error", "code": "not_member", "message": "not a member"}),
        (
            sf.error(ErrorCode.RATE_LIMITED, "slow down", rid=3, cmid="c1", retry_after=250),
            {"t": "error", "code": "rate_limited", "message": "slow down", "cmid": "c1",
             "retry_after": 250, "rid": 3},
        ),
        (
            sf.error("invalid", "text is required", field="text"),
            {"t": "error", "code": "invalid", "message": "text is required", "field": "text"},
        ),
    ],
)  # fmt: skip
def test_builders(frame: Any, expected: Any) -> None:
    assert frame == expected


def test_error_code_is_a_plain_string() -> None:
    assert type(sf.error(ErrorCode.INTERNAL, "oops")["code"]) is str


def test_conv_frame_does_not_change_the_conversation_object() -> None:
    conversation = sf.conversation(1, "room", "Fika", [], 0)
    sf.conv_frame(conversation, rid=1)
    assert conversation == {"conv": 1, "kind": "room", "title": "Fika", "members": [],
                            "last_seq": 0}  # fmt: skip


@pytest.mark.parametrize("codec", [JSON_CODEC, MSGPACK_CODEC], ids=["json", "msgpack"])
def test_server_frames_survive_both_codecs(codec: Any) -> None:
    frames = [
        sf.ready({"id": 1, "username": "anna", "age": 15, "role": "member"}, 9, "n1", 1, [CONV], 1),
        sf.conv_frame(CONV),
        sf.msg(5, 100, 18, 2, "bob", None, 1234, "c1", removed=True),
        sf.error(ErrorCode.BAD_FRAME, "no", rid="x"),
    ]
    for frame in frames:
        assert codec.decode(codec.encode(frame)) == frame
