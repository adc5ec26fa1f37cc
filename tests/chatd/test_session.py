"""The session: `ready`, authentication and its failures, frame size, subprotocols, Origin
(PROTOCOL.md sections 1 and 2)."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
import websockets
from chatkit import Kit, NodePool, expect_closed, join_room, pack, roundtrip
from websockets.exceptions import InvalidStatus

from chatd.client import ChatClient

MAX_FRAME = 64 * 1024  # bytes of one WebSocket message the server takes (PROTOCOL.md 1)
ALLOWED_ORIGIN = "https://chat.example.org"
# Seconds of limits.auth_timeout_s on the strict node.
AUTH_TIMEOUT_S = 1


async def test_ready_has_the_user_session_node_time_and_conversations(kit: Kit) -> None:
    me, other = await kit.accounts(2)
    first = await kit.connect(me)
    room = await join_room([first])
    await first.send(room, "one")
    await first.send(room, "two")
    dm = (await first.request({"t": "dm.open", "user": other.id}))["conv"]

    before = int(time.time() * 1000)
    again = await kit.connect(me)
    after = int(time.time() * 1000)
    ready = again.ready
    assert ready["t"] == "ready"
    assert ready["rid"] == 1  # the client's auth frame carried rid 1
    assert set(ready["user"]) >= {"id", "username", "age", "role"}
    assert ready["user"]["id"] == me.id
    assert ready["user"]["username"] == me.username
    assert ready["user"]["role"] == "member"
    today = datetime.datetime.now(datetime.UTC).date()
    assert ready["user"]["age"] == today.year - 1990  # born on 1 January 1990
    assert isinstance(ready["session"], int)
    assert isinstance(ready["node"], str) and ready["node"]
    assert before - 5_000 <= ready["server_time"] <= after + 5_000
    convs = {c["conv"]: c for c in ready["conversations"]}
    assert set(convs) == {room, dm}
    assert convs[room]["kind"] == "room" and convs[room]["last_seq"] == 2
    assert convs[dm] == {
        "conv": dm,
        "kind": "dm",
        "title": other.username,
        "members": convs[dm]["members"],
        "last_seq": 0,
    }
    assert sorted(m["id"] for m in convs[dm]["members"]) == sorted([me.id, other.id])
    for conv in convs.values():
        assert set(conv) >= {"conv", "kind", "title", "members", "last_seq"}
        assert all(set(m) >= {"id", "username"} for m in conv["members"])


async def test_a_new_account_is_ready_with_no_conversations(kit: Kit) -> None:
    me = await kit.account()
    client = await kit.connect(me)
    assert client.ready["conversations"] == []


FIRST_FRAMES: dict[str, bytes] = {
    "another type": pack({"t": "ping", "rid": 1}),
    "undecodable": b"\xc1\xc1\xc1",
    "not a map": pack(["auth", "token"]),
    "no t": pack({"token": "x"}),
}


@pytest.mark.parametrize("data", FIRST_FRAMES.values(), ids=FIRST_FRAMES.keys())
async def test_a_first_frame_that_is_not_auth_is_unauthenticated_and_closed_4001(
    kit: Kit, data: bytes
) -> None:
    client = await kit.connect(None, auth=False)
    await client.send_raw(data)
    error = await client.next_push()
    assert error["t"] == "error" and error["code"] == "unauthenticated"
    if data == FIRST_FRAMES["another type"]:
        assert error.get("rid") == 1  # a direct reply echoes a good rid
    await expect_closed(client, 4001)


@pytest.fixture
def strict_kit(node_pool: NodePool, make_kit: Callable[..., Kit]) -> Kit:
    """A node with a 1 s auth timeout and one allowed foreign origin."""
    return make_kit(
        node_pool.get(limits_auth_timeout_s=AUTH_TIMEOUT_S, server_allowed_origins=[ALLOWED_ORIGIN])
    )


async def test_no_auth_within_the_timeout_closes_4001(strict_kit: Kit) -> None:
    kit = strict_kit
    me = await kit.account()
    started = time.monotonic()
    silent = await kit.connect(None, auth=False)
    await expect_closed(silent, 4001, timeout=AUTH_TIMEOUT_S + 9)
    waited = time.monotonic() - started
    # Not before the timeout; after it, within what a loaded machine may add.
    assert AUTH_TIMEOUT_S - 0.1 <= waited <= AUTH_TIMEOUT_S + 7, f"closed after {waited:.2f}s"
    # Within the timeout, auth still works.
    prompt = await kit.connect(me)
    assert prompt.ready["user"]["id"] == me.id


BAD_TOKENS: dict[str, Any] = {
    "unknown": "x" * 43,
    "empty": "",
    "not a string": 12345,
    "too long": "y" * 600,
}


@pytest.mark.parametrize("token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
async def test_a_bad_token_is_unauthenticated_and_closed_4001(kit: Kit, token: Any) -> None:
    client = await kit.connect(None, auth=False)
    await client.send_raw(pack({"t": "auth", "token": token, "rid": 7}))
    error = await client.next_push()
    assert error["t"] == "error" and error["code"] == "unauthenticated"
    assert error.get("rid") == 7  # a direct reply echoes the frame's rid
    await expect_closed(client, 4001)


async def test_a_revoked_token_is_unauthenticated_and_closed_4001(kit: Kit) -> None:
    me = await kit.account()
    status, _ = await kit.api("POST", "/api/logout", token=me.token)
    assert status == 204
    client = await kit.connect(None, auth=False)
    await client.send_raw(pack({"t": "auth", "token": me.token}))
    error = await client.next_push()
    assert error["t"] == "error" and error["code"] == "unauthenticated"
    await expect_closed(client, 4001)


async def test_a_first_frame_over_64_kib_closes_1009(kit: Kit) -> None:
    me = await kit.account()
    client = await kit.connect(None, auth=False)
    await client.send_raw(pack({"t": "auth", "token": me.token, "pad": "x" * MAX_FRAME}))
    await expect_closed(client, 1009)
    assert not [f for f in client.frames if f.get("t") == "ready"]


async def test_a_first_frame_of_exactly_64_kib_is_taken(kit: Kit) -> None:
    me = await kit.account()
    client = await kit.connect(None, auth=False)
    await client.send_raw(_padded({"t": "auth", "token": me.token, "rid": "a"}, MAX_FRAME))
    ready = await client.next_push()
    assert ready["t"] == "ready" and ready["rid"] == "a" and ready["user"]["id"] == me.id


async def test_a_later_frame_over_64_kib_closes_1009_and_one_of_64_kib_is_served(
    kit: Kit,
) -> None:
    me = await kit.account()
    client = await kit.connect(me)
    room = await join_room([client])
    exact = _padded(
        {"t": "send", "conv": room, "text": "fits", "cmid": "c1", "rid": "r1"}, MAX_FRAME
    )
    await client.send_raw(exact)
    ack = await client.next_push("ack")
    assert ack["rid"] == "r1" and ack["seq"] == 1
    await client.send_raw(
        _padded({"t": "send", "conv": room, "text": "big", "cmid": "c2"}, MAX_FRAME + 1)
    )
    await expect_closed(client, 1009)
    # The oversized message was not taken.
    reader = await kit.connect(me)
    history = await reader.sync_all(room)
    assert [m["text"] for m in history] == ["fits"]


def _padded(frame: dict[str, Any], size: int) -> bytes:
    """The frame in MessagePack, grown by a `pad` field to exactly `size` bytes."""
    for pad in range(size - len(pack(frame)) - 16, size):
        data = pack({**frame, "pad": "p" * pad})
        if len(data) == size:
            return data
    raise AssertionError(f"cannot pad to {size} bytes")


# -- subprotocols ----------------------------------------------------------------------------


async def test_no_subprotocol_offered_gets_msgpack_and_no_subprotocol_in_the_answer(
    kit: Kit,
) -> None:
    me = await kit.account()
    async with websockets.connect(kit.ws_url, compression=None) as ws:
        assert ws.subprotocol is None
        assert ws.response is not None
        assert "Sec-WebSocket-Protocol" not in ws.response.headers
        await ws.send(pack({"t": "auth", "token": me.token, "rid": 1}))
        data = await ws.recv()
        assert isinstance(data, bytes)
        ready = msgpack.unpackb(data)
        assert ready["t"] == "ready" and ready["user"]["id"] == me.id


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["chatd.v1.json"], "chatd.v1.json"),
        (["chatd.v1.msgpack"], "chatd.v1.msgpack"),
        (["x.other", "chatd.v1.json"], "chatd.v1.json"),
    ],
)
async def test_an_offered_subprotocol_is_chosen_and_framed_as_it_says(
    kit: Kit, offered: list[str], chosen: str
) -> None:
    me = await kit.account()
    async with websockets.connect(
        kit.ws_url,
        subprotocols=offered,  # type: ignore[arg-type]
        compression=None,
    ) as ws:
        assert ws.subprotocol == chosen
        assert ws.response is not None
        assert ws.response.headers["Sec-WebSocket-Protocol"] == chosen
        if chosen == "chatd.v1.json":
            await ws.send(json.dumps({"t": "auth", "token": me.token, "rid": 1}))
            data = await ws.recv()
            assert isinstance(data, str)
            ready = json.loads(data)
        else:
            await ws.send(pack({"t": "auth", "token": me.token, "rid": 1}))
            data = await ws.recv()
            assert isinstance(data, bytes)
            ready = msgpack.unpackb(data)
        assert ready["t"] == "ready" and ready["user"]["id"] == me.id


async def test_an_offered_list_with_neither_subprotocol_is_refused_400(kit: Kit) -> None:
    with pytest.raises(InvalidStatus) as caught:
        await websockets.connect(
            kit.ws_url,
            subprotocols=["chatd.v2.json", "graphql-ws"],  # type: ignore[list-item]
            compression=None,
        )
    assert caught.value.response.status_code == 400


# -- Origin ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example.com", "http://localhost:{port}", "http://127.0.0.1:1", "null"],
)
async def test_a_foreign_origin_is_refused_403(kit: Kit, origin: str) -> None:
    origin = origin.format(port=kit.server.port)
    with pytest.raises(InvalidStatus) as caught:
        await websockets.connect(
            kit.ws_url,
            subprotocols=["chatd.v1.msgpack"],  # type: ignore[list-item]
            origin=origin,  # type: ignore[arg-type]
            compression=None,
        )
    assert caught.value.response.status_code == 403


async def test_the_servers_own_origin_is_allowed(kit: Kit) -> None:
    me = await kit.account()
    client = await kit.connect(me, origin=f"http://127.0.0.1:{kit.server.port}")
    assert client.ready["user"]["id"] == me.id
    await roundtrip(client)


async def test_no_origin_is_allowed(kit: Kit) -> None:
    me = await kit.account()
    client = await kit.connect(me, origin=None)
    assert client.ready["user"]["id"] == me.id


async def test_a_listed_origin_is_allowed_and_others_still_refused(strict_kit: Kit) -> None:
    kit = strict_kit
    me = await kit.account()
    client = await kit.connect(me, origin=ALLOWED_ORIGIN)
    assert client.ready["user"]["id"] == me.id
    own = await kit.connect(me, origin=f"http://127.0.0.1:{kit.server.port}")
    assert own.ready["user"]["id"] == me.id
    with pytest.raises(InvalidStatus) as caught:
        await ChatClient.connect(kit.ws_url, me.token, origin="https://chat.example.net")
    assert caught.value.response.status_code == 403
