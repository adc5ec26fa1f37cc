"""The members' HTTP API and the operations endpoints (PROTOCOL.md section 6), with the
account limits and forwarding headers of section 8."""

from __future__ import annotations

import datetime
import json
import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from chatkit import PASSWORD, Kit, NodePool, expect_closed, fresh_window, join_room, unique_name
from prometheus_client.parser import text_string_to_metric_families
from support.server import ServerProcess

from chatd.client import ChatClient

REGISTER_LIMIT = 2  # limits.register_per_address_per_hour on the limit tests' nodes
LOGIN_FAILURES = 3  # limits.login_failures_per_minute there
REGISTER_WINDOW_S = 3600
LOGIN_WINDOW_S = 60
GARBAGE_BODIES = 60  # random bodies thrown at each endpoint
NEVER = {500, 502, 503, 504}
# Seconds one HTTP request may take.
HTTP_TIMEOUT_S = 10.0
# Seconds a login-limit or register-limit test needs inside one counting window.
LOGIN_TEST_S = 15.0
REGISTER_TEST_S = 30.0


def _body(username: str, **changes: Any) -> dict[str, Any]:
    body = {
        "username": username,
        "password": PASSWORD,
        "email": f"{username}@example.org",
        "birthdate": "1990-05-17",
    }
    body.update(changes)
    return body


def _birthdate(years: int, *, days_before_birthday: int = 0) -> str:
    """Someone who turns `years` old today, or that many days from now."""
    day = datetime.datetime.now(datetime.UTC).date() + datetime.timedelta(days=days_before_birthday)
    try:
        return day.replace(year=day.year - years).isoformat()
    except ValueError:  # 29 February: the year `years` ago had none
        return day.replace(year=day.year - years, day=28).isoformat()


async def _raw(
    kit: Kit, method: str, path: str, content: bytes | str | None = None, **kw: Any
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=kit.base_url, timeout=HTTP_TIMEOUT_S) as http:
        return await http.request(method, path, content=content, **kw)


# -- register ----------------------------------------------------------------------------------


async def test_register_answers_201_with_the_user_and_a_token_that_works(kit: Kit) -> None:
    name = unique_name("Reg")
    status, body = await kit.api("POST", "/api/register", _body(name))
    assert status == 201
    user = body["user"]
    assert user["username"] == name and user["role"] == "member"
    assert isinstance(user["id"], int) and isinstance(user["age"], int)
    assert isinstance(body["token"], str) and body["token"]
    status, me = await kit.api("GET", "/api/me", token=body["token"])
    assert status == 200 and me["user"] == user
    client = await kit.connect(body["token"])
    assert client.ready["user"] == user


async def test_register_takes_a_username_only_once_whatever_its_case_or_form(kit: Kit) -> None:
    name = unique_name("Case")
    assert (await kit.api("POST", "/api/register", _body(name)))[0] == 201
    fullwidth = "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in name)
    for taken in (name.upper(), name.lower(), fullwidth):
        status, body = await kit.api("POST", "/api/register", _body(taken))
        assert status == 409 and body["error"]["code"] == "username_taken", (taken, body)


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        (
            {"username": None, "password": None, "email": None, "birthdate": None},
            {"username", "password", "email", "birthdate"},
        ),
        ({"username": "ab"}, {"username"}),
        ({"username": "has space"}, {"username"}),
        ({"username": "x" * 33}, {"username"}),
        ({"username": 12345}, {"username"}),
        ({"password": "short"}, {"password"}),
        ({"password": "p" * 257}, {"password"}),
        ({"email": "no-at-sign"}, {"email"}),
        ({"email": "two@@example.org"}, {"email"}),
        ({"email": "a@nodot"}, {"email"}),
        ({"birthdate": "2000-13-01"}, {"birthdate"}),
        ({"birthdate": "01/02/2000"}, {"birthdate"}),
        ({"birthdate": "2999-01-01"}, {"birthdate"}),
        ({"password": "short", "email": "bad"}, {"password", "email"}),
    ],
)
async def test_register_refuses_bad_fields_422_naming_each(
    kit: Kit, changes: dict[str, Any], fields: set[str]
) -> None:
    body = {**_body(unique_name()), **changes}
    body = {k: v for k, v in body.items() if v is not None}
    status, answer = await kit.api("POST", "/api/register", body)
    assert status == 422, answer
    assert answer["error"]["code"] == "invalid"
    assert set(answer["error"]["fields"]) == fields
    assert all(isinstance(v, str) and v for v in answer["error"]["fields"].values())


async def test_register_refuses_a_14_year_old_and_takes_a_15_year_old(kit: Kit) -> None:
    status, body = await kit.api(
        "POST",
        "/api/register",
        _body(unique_name(), birthdate=_birthdate(15, days_before_birthday=1)),
    )
    assert status == 422 and body["error"]["code"] == "under_age"
    status, body = await kit.api(
        "POST", "/api/register", _body(unique_name(), birthdate=_birthdate(15))
    )
    assert status == 201 and body["user"]["age"] == 15


@pytest.mark.parametrize(
    "content",
    ["not json", "{", "[]", '["username"]', '"a string"', "42", "null", b"\xff\xfe\x00garbage"],
    ids=["text", "broken", "empty array", "array", "string", "number", "null", "bytes"],
)
async def test_register_refuses_a_body_that_is_not_a_json_object_400(
    kit: Kit, content: str | bytes
) -> None:
    response = await _raw(
        kit, "POST", "/api/register", content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "bad_request"


def _garbage(rng: random.Random) -> bytes:
    """A random body: bytes, JSON of odd shapes, or a registration with odd values."""
    odd_values: list[Any] = [
        None,
        True,
        0,
        -1,
        2**70,
        1e308,
        "",
        " ",
        "\u0000",
        "\ud800",
        "é" * 300,
        [],
        {},
        [[[]]],
        {"a": {"b": []}},
        "x" * 5000,
        "2000-02-30",
        "٢٠٠٠-٠١-٠١",
        "a@b.c",
        "../../etc/passwd",
    ]
    kind = rng.randrange(5)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    if kind == 1:
        depth = rng.choice([10, 100, 2000, 20000])
        return ("[" * depth + "]" * depth).encode()
    if kind == 2:
        return json.dumps(rng.choice(odd_values)).encode()
    body = {
        key: rng.choice(odd_values)
        for key in ("username", "password", "email", "birthdate", "extra")
        if rng.random() < 0.8
    }
    text = json.dumps(body)
    if rng.random() < 0.3:
        text = text[: rng.randrange(len(text) + 1)]  # cut short
    return text.encode("utf-8", "surrogatepass")


@pytest.mark.parametrize("path", ["/api/register", "/api/login"])
async def test_garbage_bodies_never_get_a_server_error(kit: Kit, path: str) -> None:
    rng = random.Random(f"chatd {path}")  # the same bodies every run
    async with httpx.AsyncClient(base_url=kit.base_url, timeout=HTTP_TIMEOUT_S) as http:
        for _ in range(GARBAGE_BODIES):
            body = _garbage(rng)
            response = await http.post(path, content=body)
            assert response.status_code not in NEVER, (body[:200], response.text[:200])
            assert 400 <= response.status_code < 500 or response.status_code in (200, 201)
            if response.status_code >= 400:
                error = response.json()["error"]
                assert isinstance(error["code"], str) and isinstance(error["message"], str)
    status, _ = await kit.api("GET", "/healthz")
    assert status == 200


async def test_a_body_over_64_kib_is_refused_400(kit: Kit) -> None:
    body = json.dumps(_body(unique_name(), extra="x" * 70_000))
    response = await _raw(kit, "POST", "/api/register", body)
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"


# -- login -------------------------------------------------------------------------------------


async def test_login_answers_200_with_a_new_token_and_refuses_bad_credentials_401(
    kit: Kit,
) -> None:
    me = await kit.account()
    status, body = await kit.api(
        "POST", "/api/login", {"username": me.username.upper(), "password": PASSWORD}
    )
    assert status == 200
    assert body["user"]["id"] == me.id and body["token"] != me.token
    client = await kit.connect(body["token"])
    assert client.ready["user"]["id"] == me.id
    fullwidth = "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in me.username)
    status, body = await kit.api(
        "POST", "/api/login", {"username": fullwidth, "password": PASSWORD}
    )
    assert status == 200 and body["user"]["id"] == me.id
    for wrong in (
        {"username": me.username, "password": "not-the-password"},
        {"username": unique_name("nobody"), "password": PASSWORD},
    ):
        status, body = await kit.api("POST", "/api/login", wrong)
        assert status == 401 and body["error"]["code"] == "bad_credentials"
    status, body = await kit.api("POST", "/api/login", {"username": me.username})
    assert status == 422 and "password" in body["error"]["fields"]


@pytest.fixture
def proxied_kit(node_pool: NodePool, make_kit: Any) -> Kit:
    """A node behind a trusted proxy (127.0.0.1) with low account limits."""
    kit: Kit = make_kit(
        node_pool.get(
            server_trusted_proxies=["127.0.0.1"],
            limits_register_per_address_per_hour=REGISTER_LIMIT,
            limits_login_failures_per_minute=LOGIN_FAILURES,
        )
    )
    return kit


def _from(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def test_past_the_failed_logins_of_an_account_even_the_right_password_gets_429(
    proxied_kit: Kit,
) -> None:
    kit = proxied_kit
    target, bystander = await kit.accounts(2)
    await fresh_window(LOGIN_WINDOW_S, need_s=LOGIN_TEST_S)
    wrong = {"username": target.username, "password": "guessing-wrong"}
    # Each failure from another address: only the account's budget runs out.
    for n in range(LOGIN_FAILURES):
        status, body = await kit.api("POST", "/api/login", wrong, headers=_from(f"192.0.2.{n + 1}"))
        assert status == 401 and body["error"]["code"] == "bad_credentials"
    right = {"username": target.username, "password": PASSWORD}
    response = await _raw(
        kit, "POST", "/api/login", json.dumps(right), headers=_from("192.0.2.100")
    )
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= LOGIN_WINDOW_S
    # Another account from that same address is not touched.
    status, _ = await kit.api(
        "POST",
        "/api/login",
        {"username": bystander.username, "password": PASSWORD},
        headers=_from("192.0.2.100"),
    )
    assert status == 200


async def test_past_the_failed_logins_of_an_address_every_login_from_it_gets_429(
    proxied_kit: Kit,
) -> None:
    kit = proxied_kit
    me = await kit.account()
    await fresh_window(LOGIN_WINDOW_S, need_s=LOGIN_TEST_S)
    for _ in range(LOGIN_FAILURES):
        status, _ = await kit.api(
            "POST",
            "/api/login",
            {"username": unique_name("nobody"), "password": "whatever-pw"},
            headers=_from("198.51.100.66"),
        )
        assert status == 401
    right = {"username": me.username, "password": PASSWORD}
    status, body = await kit.api("POST", "/api/login", right, headers=_from("198.51.100.66"))
    assert status == 429 and body["error"]["code"] == "rate_limited"
    status, _ = await kit.api("POST", "/api/login", right, headers=_from("198.51.100.67"))
    assert status == 200


async def test_a_trusted_proxys_forwarded_addresses_are_separate_register_budgets(
    proxied_kit: Kit,
) -> None:
    kit = proxied_kit
    await fresh_window(REGISTER_WINDOW_S, need_s=REGISTER_TEST_S)
    one, two = "203.0.113.10", "203.0.113.20"
    for _ in range(REGISTER_LIMIT):
        await kit.register(headers=_from(one))
    status, body = await kit.api("POST", "/api/register", _body(unique_name()), headers=_from(one))
    assert status == 429 and body["error"]["code"] == "rate_limited"
    # The right-most address that is not a trusted proxy is the client's.
    for _ in range(REGISTER_LIMIT):
        await kit.register(headers=_from(f"{one}, {two}, 127.0.0.1"))
    status, _ = await kit.api("POST", "/api/register", _body(unique_name()), headers=_from(two))
    assert status == 429


async def test_registrations_per_address_are_limited_and_only_successes_count(
    start_server: Callable[..., ServerProcess], make_kit: Callable[[ServerProcess], Kit]
) -> None:
    # A trusted proxy that is not us: our X-Forwarded-For must be ignored.
    kit = make_kit(
        start_server(
            limits_register_per_address_per_hour=REGISTER_LIMIT,
            server_trusted_proxies=["10.9.9.9"],
        )
    )
    await fresh_window(REGISTER_WINDOW_S, need_s=REGISTER_TEST_S)
    name = unique_name()
    status, _ = await kit.api("POST", "/api/register", _body(name, password="short"))
    assert status == 422  # refused registrations do not count
    first = await kit.register(name, headers=_from("198.51.100.1"))
    status, _ = await kit.api("POST", "/api/register", _body(name.upper()))
    assert status == 409
    await kit.register(headers=_from("198.51.100.2"))
    response = await _raw(
        kit,
        "POST",
        "/api/register",
        json.dumps(_body(unique_name())),
        headers=_from("198.51.100.3"),
    )
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1
    # Logging in is another budget.
    status, _ = await kit.api("POST", "/api/login", {"username": name, "password": PASSWORD})
    assert status == 200 and first.id


# -- the caller's own data ---------------------------------------------------------------------


async def test_me_needs_a_good_bearer_token(kit: Kit) -> None:
    me = await kit.account()
    status, body = await kit.api("GET", "/api/me", token=me.token)
    assert status == 200 and body["user"] == me.user
    for token in (None, "not-a-token"):
        status, body = await kit.api("GET", "/api/me", token=token)
        assert status == 401 and body["error"]["code"] == "unauthenticated"
    status, _ = await kit.api("GET", "/api/me", headers={"Authorization": f"Basic {me.token}"})
    assert status == 401


async def test_conversations_lists_the_callers_dms_and_rooms(kit: Kit) -> None:
    me, other = await kit.accounts(2)
    client = await kit.connect(me)
    dm = (await client.request({"t": "dm.open", "user": other.id}))["conv"]
    room = await join_room([client])
    await client.send(room, "hi")
    status, body = await kit.api("GET", "/api/conversations", token=me.token)
    assert status == 200
    convs = {c["conv"]: c for c in body["conversations"]}
    assert set(convs) == {dm, room}
    assert convs[dm]["kind"] == "dm" and convs[dm]["title"] == other.username
    assert convs[room]["kind"] == "room" and convs[room]["last_seq"] == 1
    assert {m["id"] for m in convs[dm]["members"]} == {me.id, other.id}
    status, _ = await kit.api("GET", "/api/conversations")
    assert status == 401


async def test_history_pages_by_after_and_limit_for_members_only(kit: Kit) -> None:
    me, stranger = await kit.accounts(2)
    client = await kit.connect(me)
    room = await join_room([client])
    acks = [await client.send(room, f"h{i}") for i in range(1, 8)]
    path = f"/api/conversations/{room}/messages"
    status, body = await kit.api("GET", path, token=me.token)
    assert status == 200 and body["more"] is False
    assert [m["seq"] for m in body["messages"]] == list(range(1, 8))
    first = body["messages"][0]
    assert "t" not in first
    assert first == {
        **first,
        "conv": room,
        "id": acks[0]["id"],
        "seq": 1,
        "text": "h1",
        "cmid": acks[0]["cmid"],
        "from": {"id": me.id, "username": me.username},
    }
    status, body = await kit.api("GET", f"{path}?after=2&limit=3", token=me.token)
    assert [m["seq"] for m in body["messages"]] == [3, 4, 5] and body["more"] is True
    status, body = await kit.api("GET", f"{path}?after=5&limit=2", token=me.token)
    assert [m["seq"] for m in body["messages"]] == [6, 7] and body["more"] is False
    status, body = await kit.api("GET", f"{path}?after=7", token=me.token)
    assert body == {"messages": [], "more": False}
    for query in ("limit=0", "limit=501", "after=-1", "limit=abc"):
        status, body = await kit.api("GET", f"{path}?{query}", token=me.token)
        assert status == 422 and body["error"]["code"] == "invalid", query
    for conv in (room, 2**62):
        status, body = await kit.api(
            "GET", f"/api/conversations/{conv}/messages", token=stranger.token
        )
        assert status == 403 and body["error"]["code"] == "not_member"


async def test_logout_answers_204_closes_that_sessions_sockets_1000_and_revokes_its_token(
    kit: Kit,
) -> None:
    me = await kit.account()
    status, other_session = await kit.api(
        "POST", "/api/login", {"username": me.username, "password": PASSWORD}
    )
    assert status == 200
    doomed = [await kit.connect(me), await kit.connect(me, codec="json")]
    survivor = await kit.connect(other_session["token"])
    status, body = await kit.api("POST", "/api/logout", token=me.token)
    assert status == 204 and body is None
    for client in doomed:
        await expect_closed(client, 1000)
    status, body = await kit.api("GET", "/api/me", token=me.token)
    assert status == 401 and body["error"]["code"] == "unauthenticated"
    refused = await ChatClient.connect(kit.ws_url, None, auth=False)
    kit.clients.append(refused)
    await refused.send_frame({"t": "auth", "token": me.token})
    assert (await refused.next_push("error"))["code"] == "unauthenticated"
    await expect_closed(refused, 4001)
    # The account's other session lives on.
    assert (await survivor.request({"t": "ping"}))["t"] == "pong"
    status, _ = await kit.api("GET", "/api/me", token=other_session["token"])
    assert status == 200


async def test_the_device_cookie_is_set_only_when_no_device_is_named(kit: Kit) -> None:
    async with httpx.AsyncClient(base_url=kit.base_url, timeout=HTTP_TIMEOUT_S) as http:
        response = await http.post("/api/register", json=_body(unique_name()))
        assert response.status_code == 201
        cookie = response.cookies.get("chatd_device")
        assert cookie, response.headers
        set_cookie = response.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "max-age=" in set_cookie
        # The client now holds the cookie: it is not set again.
        again = await http.post("/api/register", json=_body(unique_name()))
        assert again.status_code == 201 and "set-cookie" not in again.headers
        assert http.cookies.get("chatd_device") == cookie
    async with httpx.AsyncClient(base_url=kit.base_url, timeout=HTTP_TIMEOUT_S) as http:
        named = await http.post(
            "/api/register", json=_body(unique_name()), headers={"X-Device-Id": "dev-123"}
        )
        assert named.status_code == 201 and "set-cookie" not in named.headers
        me = await kit.account()
        login = await http.post("/api/login", json={"username": me.username, "password": PASSWORD})
        assert login.status_code == 200 and login.cookies.get("chatd_device")


# -- operations --------------------------------------------------------------------------------


async def test_healthz_readyz_and_metrics(kit: Kit) -> None:
    status, body = await kit.api("GET", "/healthz")
    assert status == 200
    status, body = await kit.api("GET", "/readyz")
    assert status == 200
    assert body["broker"] is True and body["storage"] is True
    before = await _samples(kit)
    assert {"chatd_connections", "chatd_frames_received_total"} <= set(before)
    client = await kit.connect(await kit.account())
    for _ in range(3):
        await client.request({"t": "ping"})
    after = await _samples(kit)
    assert after["chatd_frames_received_total"] >= before["chatd_frames_received_total"] + 3
    assert after["chatd_connections"] >= 1


async def _samples(kit: Kit) -> dict[str, float]:
    """The node's unlabelled chatd_ samples, read as Prometheus text (which must parse)."""
    response = await _raw(kit, "GET", "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if not sample.labels
    }
    assert samples and all(name.startswith("chatd_") for name in samples)
    return samples
