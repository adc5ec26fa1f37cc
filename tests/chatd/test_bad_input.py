"""Bad input on a live session (PROTOCOL.md sections 1 and 5): each gets its error code,
the connection stays open where the contract says so, and two bystanders talking on the
same node never notice."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from chatkit import Chatter, Kit, errors_of, expect_closed, join_room, pack, roundtrip

from chatd.client import ChatClient

BAD_FRAMES_PER_MINUTE = 10  # the default of limits.bad_frames_per_minute
MAX_TEXT = 4000  # code points of a message text (PROTOCOL.md section 1)
MAX_DEPTH = 32  # nesting levels of a frame (PROTOCOL.md section 1)
ABSENT = object()  # the reply must carry no such key
ANY = object()  # the contract leaves it open (a frame too broken to read a rid from)


@dataclass(frozen=True)
class Case:
    """One bad frame: how to build it for a room, and the error it must get."""

    build: Callable[[int], bytes | str]
    code: str
    field: str | None = None
    rid: Any = ABSENT
    cmid: Any = ABSENT
    codec: str = "msgpack"


def _json(frame: dict[str, Any]) -> str:
    return json.dumps(frame)


def _with_conv(template: str, conv: int) -> str:
    """JSON text written by hand (escapes and all), with the conversation id put in."""
    return template.replace("CONV", str(conv))


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


MSGPACK_CASES: dict[str, Case] = {
    "undecodable bytes": Case(lambda c: b"\xc1\xc1", "bad_frame"),
    "truncated map": Case(lambda c: pack({"t": "ping", "rid": 1, "x": "abc"})[:-2], "bad_frame"),
    "a list": Case(lambda c: pack([{"t": "ping", "rid": 1}]), "bad_frame"),
    "a number": Case(lambda c: pack(42), "bad_frame"),
    "missing t": Case(lambda c: pack({"rid": 5, "conv": c}), "bad_frame", rid=5),
    "t not a string": Case(lambda c: pack({"t": 7, "rid": 6}), "bad_frame", rid=6),
    "a key not a string": Case(lambda c: pack({"t": "ping", "rid": 7, 1: 2}), "bad_frame", rid=ANY),
    "nested 1000 deep": Case(
        lambda c: pack({"t": "ping", "rid": 8, "x": _nested(1000)}), "bad_frame", rid=8
    ),
    "unknown type": Case(lambda c: pack({"t": "dance", "rid": 9}), "unknown_type", rid=9),
    "send conv a string": Case(
        lambda c: pack({"t": "send", "conv": "abc", "text": "x", "cmid": "m1", "rid": 10}),
        "invalid",
        "conv",
        rid=10,
        cmid="m1",
    ),
    "send conv a boolean": Case(
        lambda c: pack({"t": "send", "conv": True, "text": "x", "cmid": "m2", "rid": 11}),
        "invalid",
        "conv",
        rid=11,
        cmid="m2",
    ),
    "send conv a float": Case(
        lambda c: pack({"t": "send", "conv": float(c), "text": "x", "cmid": "m3", "rid": 12}),
        "invalid",
        "conv",
        rid=12,
        cmid="m3",
    ),
    "send text a number": Case(
        lambda c: pack({"t": "send", "conv": c, "text": 5, "cmid": "m4", "rid": 13}),
        "invalid",
        "text",
        rid=13,
        cmid="m4",
    ),
    "send without text": Case(
        lambda c: pack({"t": "send", "conv": c, "cmid": "m5", "rid": 14}),
        "invalid",
        "text",
        rid=14,
        cmid="m5",
    ),
    "send cmid a number": Case(
        lambda c: pack({"t": "send", "conv": c, "text": "x", "cmid": 5, "rid": 15}),
        "invalid",
        "cmid",
        rid=15,
    ),
    "send cmid too long": Case(
        lambda c: pack({"t": "send", "conv": c, "text": "x", "cmid": "c" * 65, "rid": 16}),
        "invalid",
        "cmid",
        rid=16,
    ),
    "send text bytes": Case(
        lambda c: pack({"t": "send", "conv": c, "text": b"hi", "cmid": "m6", "rid": 17}),
        "invalid",
        "text",
        rid=17,
        cmid="m6",
    ),
    "sync limit a string": Case(
        lambda c: pack({"t": "sync", "conv": c, "limit": "x", "rid": 18}), "invalid", "limit", 18
    ),
    "sync limit 0": Case(
        lambda c: pack({"t": "sync", "conv": c, "limit": 0, "rid": 19}), "invalid", "limit", 19
    ),
    "sync limit 501": Case(
        lambda c: pack({"t": "sync", "conv": c, "limit": 501, "rid": 20}), "invalid", "limit", 20
    ),
    "sync after negative": Case(
        lambda c: pack({"t": "sync", "conv": c, "after": -1, "rid": 21}), "invalid", "after", 21
    ),
    "dm.open user a list": Case(
        lambda c: pack({"t": "dm.open", "user": [1], "rid": 22}), "invalid", "user", 22
    ),
    "room.join room a number": Case(
        lambda c: pack({"t": "room.join", "room": 5, "rid": 23}), "invalid", "room", 23
    ),
    "room.join bad name": Case(
        lambda c: pack({"t": "room.join", "room": "a/b", "rid": 24}), "invalid", "room", 24
    ),
    "text over 4000 code points": Case(
        lambda c: pack(
            {"t": "send", "conv": c, "text": "é" * (MAX_TEXT + 1), "cmid": "m7", "rid": 25}
        ),
        "invalid",
        "text",
        rid=25,
        cmid="m7",
    ),
    "whitespace-only text": Case(
        lambda c: pack({"t": "send", "conv": c, "text": " \t\n\u3000 ", "cmid": "m8", "rid": 26}),
        "invalid",
        "text",
        rid=26,
        cmid="m8",
    ),
    "empty text": Case(
        lambda c: pack({"t": "send", "conv": c, "text": "", "cmid": "m9", "rid": 27}),
        "invalid",
        "text",
        rid=27,
        cmid="m9",
    ),
    "a text frame on msgpack": Case(lambda c: _json({"t": "ping", "rid": 28}), "bad_frame"),
}

JSON_CASES: dict[str, Case] = {
    "json undecodable": Case(lambda c: '{"t": "ping", "rid": ', "bad_frame", codec="json"),
    "json a list": Case(lambda c: '[{"t": "ping"}]', "bad_frame", codec="json"),
    "json missing t": Case(lambda c: '{"rid": 31}', "bad_frame", rid=31, codec="json"),
    "json lone surrogate": Case(
        lambda c: _with_conv(r'{"t":"send","conv":CONV,"text":"a\ud800b","cmid":"j1","rid":32}', c),
        "invalid",
        "text",
        rid=32,
        cmid=ANY,  # see test_a_send_refused_for_a_lone_surrogate_carries_its_cmid
        codec="json",
    ),
    "json lone low surrogate in another field": Case(
        lambda c: '{"t":"ping","rid":33,"x":"\\udc00"}', "invalid", "x", rid=33, codec="json"
    ),
    "json nested 1000 deep": Case(
        lambda c: '{"t":"ping","rid":34,"x":' + "[" * 1000 + "]" * 1000 + "}",
        "bad_frame",
        rid=ANY,
        codec="json",
    ),
    "json nested 33 deep": Case(
        lambda c: '{"t":"ping","x":' + "[" * (MAX_DEPTH) + "]" * (MAX_DEPTH) + "}",
        "bad_frame",
        codec="json",
    ),
    "json NaN": Case(lambda c: '{"t":"ping","rid":35,"x":NaN}', "bad_frame", codec="json"),
    "json wrong field type": Case(
        lambda c: _json({"t": "send", "conv": c, "text": ["x"], "cmid": "j2", "rid": 36}),
        "invalid",
        "text",
        rid=36,
        cmid="j2",
        codec="json",
    ),
    "json unknown type": Case(
        lambda c: _json({"t": "Send", "rid": "r-37"}), "unknown_type", rid="r-37", codec="json"
    ),
    "a binary frame on json": Case(
        lambda c: pack({"t": "ping", "rid": 38}), "bad_frame", codec="json"
    ),
}

CASES = {**MSGPACK_CASES, **JSON_CASES}


async def _victim(kit: Kit, codec: str) -> tuple[ChatClient, int]:
    me = await kit.account()
    client = await kit.connect(me, codec=codec)
    return client, await join_room([client])


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_a_bad_frame_gets_its_error_and_the_connection_stays_open(
    kit: Kit, chatter: Chatter, case: Case
) -> None:
    client, room = await _victim(kit, case.codec)
    await client.send_raw(case.build(room))
    error = await client.next_push()
    assert error["t"] == "error", error
    assert error["code"] == case.code, error
    assert isinstance(error["message"], str) and error["message"]
    if case.field is not None:
        assert error["field"] == case.field, error
    for key, want in (("rid", case.rid), ("cmid", case.cmid)):
        if want is ANY:
            continue
        if want is ABSENT:
            assert key not in error, error
        else:
            assert error[key] == want, error
    await roundtrip(client)
    assert await client.sync_all(room) == []  # nothing was stored
    await chatter.stop()


RID_IGNORED: dict[str, Any] = {
    "a boolean": True,
    "false": False,
    "a float": 1.5,
    "an empty string": "",
    "a string of 65": "r" * 65,
    "a list": [1],
    "a map": {"a": 1},
    "null": None,
    "an int past 63 bits": 2**63,
}


@pytest.mark.parametrize("rid", RID_IGNORED.values(), ids=RID_IGNORED.keys())
async def test_a_rid_not_of_the_contracts_form_is_ignored(
    kit: Kit, chatter: Chatter, rid: Any
) -> None:
    client, room = await _victim(kit, "msgpack")
    await client.send_raw(pack({"t": "ping", "rid": rid}))
    pong = await client.next_push()
    assert pong["t"] == "pong" and "rid" not in pong
    await client.send_raw(pack({"t": "sync", "conv": room, "rid": rid}))
    synced = await client.next_push()
    assert synced["t"] == "synced" and "rid" not in synced
    await roundtrip(client)
    await chatter.stop()


RID_ECHOED: dict[str, Any] = {
    "a string": "abc-1",
    "a string of 64": "s" * 64,
    "a one-character string": "z",
    "a non-ASCII string": "fråga",
    "zero": 0,
    "a negative int": -5,
    "a large int": 2**62,
}


@pytest.mark.parametrize("rid", RID_ECHOED.values(), ids=RID_ECHOED.keys())
async def test_a_good_rid_is_echoed_in_every_reply(kit: Kit, chatter: Chatter, rid: Any) -> None:
    client, room = await _victim(kit, "msgpack")
    await client.send_raw(pack({"t": "ping", "rid": rid}))
    pong = await client.next_push()
    assert pong["t"] == "pong" and pong["rid"] == rid and type(pong["rid"]) is type(rid)
    await client.send_raw(pack({"t": "send", "conv": room, "text": "hi", "cmid": "c", "rid": rid}))
    # The ack (a reply) carries the rid; the live msg (a push) carries none.
    frames = [await client.next_push(), await client.next_push()]
    by_type = {f["t"]: f for f in frames}
    assert set(by_type) == {"ack", "msg"}
    assert by_type["ack"]["rid"] == rid
    assert "rid" not in by_type["msg"]
    await client.send_raw(pack({"t": "sync", "conv": room, "rid": rid}))
    replayed, synced = await client.next_push(), await client.next_push()
    assert replayed["t"] == "msg" and replayed["rid"] == rid
    assert synced["t"] == "synced" and synced["rid"] == rid
    await client.send_raw(pack({"t": "dance", "rid": rid}))
    error = await client.next_push()
    assert error["code"] == "unknown_type" and error["rid"] == rid
    await chatter.stop()


async def test_a_send_refused_for_a_lone_surrogate_carries_its_cmid(kit: Kit) -> None:
    client, room = await _victim(kit, "json")
    await client.send_raw(_with_conv(r'{"t":"send","conv":CONV,"text":"\udfff","cmid":"s1"}', room))
    error = await client.next_push()
    assert error["code"] == "invalid" and error["field"] == "text"
    assert error.get("cmid") == "s1"


async def test_a_valid_surrogate_pair_in_json_is_a_character(kit: Kit) -> None:
    client, room = await _victim(kit, "json")
    await client.send_raw(
        _with_conv(r'{"t":"send","conv":CONV,"text":"\ud83d\ude00","cmid":"p"}', room)
    )
    (msg,) = [f for f in [await client.next_push(), await client.next_push()] if f["t"] == "msg"]
    assert msg["text"] == "\U0001f600"


async def test_json_nested_32_deep_is_taken(kit: Kit) -> None:
    client, _ = await _victim(kit, "json")
    # The frame is level 1, so 31 arrays inside it make 32 levels.
    await client.send_raw('{"t":"ping","rid":1,"x":' + "[" * 31 + "]" * 31 + "}")
    pong = await client.next_push()
    assert pong["t"] == "pong" and pong["rid"] == 1


async def test_text_is_stripped_before_it_is_stored_and_delivered(
    kit: Kit, chatter: Chatter
) -> None:
    me, other = await kit.accounts(2)
    sender, receiver = await kit.connect(me), await kit.connect(other, codec="json")
    room = await join_room([sender, receiver])
    ack = await sender.send(room, "  \n\t hello there \u3000\n ")
    assert ack["seq"] == 1
    got = await receiver.next_push("msg")
    assert got["text"] == "hello there"
    history = await receiver.sync_all(room)
    assert [m["text"] for m in history] == ["hello there"]
    status, body = await kit.api("GET", f"/api/conversations/{room}/messages", token=other.token)
    assert status == 200 and [m["text"] for m in body["messages"]] == ["hello there"]
    await chatter.stop()


async def test_a_text_of_4000_code_points_is_taken_whatever_its_bytes(kit: Kit) -> None:
    client, room = await _victim(kit, "msgpack")
    text = "\U0001f600" * MAX_TEXT  # 4000 code points, 16000 bytes of UTF-8
    ack = await client.send(room, f"  {text}  ")
    history = await client.sync_all(room)
    assert ack["seq"] == 1 and history[0]["text"] == text


async def test_an_error_answering_a_send_carries_its_cmid(kit: Kit, chatter: Chatter) -> None:
    me, stranger, third = await kit.accounts(3)
    client = await kit.connect(me)
    others = await kit.connect(stranger)
    theirs = (await others.request({"t": "dm.open", "user": third.id}))["conv"]
    room = await join_room([client])
    refused = {
        "not_member": {"t": "send", "conv": theirs, "text": "let me in", "cmid": "k1"},
        "invalid": {"t": "send", "conv": room, "text": "   ", "cmid": "k2"},
    }
    for code, frame in refused.items():
        reply = await client.request(frame, raise_error=False)
        assert reply["t"] == "error" and reply["code"] == code
        assert reply["cmid"] == frame["cmid"]
    await roundtrip(client)
    await chatter.stop()


async def test_the_tenth_bad_frame_within_a_minute_gets_its_error_then_close_1008(
    kit: Kit, chatter: Chatter
) -> None:
    client, room = await _victim(kit, "msgpack")
    bad = [
        b"\xc1",
        pack([1]),
        pack({"t": "dance"}),
        pack({"t": "send", "conv": "x", "text": "a", "cmid": "b"}),
        pack({"t": "send", "conv": room, "text": " ", "cmid": "b"}),
    ]
    for i in range(BAD_FRAMES_PER_MINUTE - 1):
        await client.send_raw(bad[i % len(bad)])
        await client.next_push("error")
        # Good frames between bad ones are served and do not count.
        await roundtrip(client)
        await client.send(room, f"still here {i}")
    assert not client.closed.is_set()
    await client.send_raw(pack({"t": "dance", "rid": "tenth"}))
    await expect_closed(client, 1008)
    errors = errors_of(client)
    assert len(errors) == BAD_FRAMES_PER_MINUTE
    assert errors[-1]["code"] == "unknown_type" and errors[-1]["rid"] == "tenth"
    await chatter.stop()


async def test_refusals_that_are_not_bad_frames_do_not_count_towards_1008(
    kit: Kit, chatter: Chatter
) -> None:
    client, room = await _victim(kit, "msgpack")
    for i in range(2 * BAD_FRAMES_PER_MINUTE):
        reply = await client.request({"t": "sync", "conv": 2**62 + i}, raise_error=False)
        assert reply["code"] == "not_member"
    await roundtrip(client)
    assert (await client.send(room, "still open"))["seq"] == 1
    await chatter.stop()


async def test_a_frame_over_64_kib_closes_only_that_connection(kit: Kit, chatter: Chatter) -> None:
    client, _ = await _victim(kit, "json")
    await client.send_raw(json.dumps({"t": "ping", "x": "y" * 70_000}))
    await expect_closed(client, 1009)
    await chatter.stop()
