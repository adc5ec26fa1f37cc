"""A small asyncio client for chatd (on the `websockets` library): for tests, bots and
benchmarks. Requests get a `rid` and wait for their reply; pushes queue up in order.

    token = (await register(base, "alice", "secret-pw", "2000-01-01"))["token"]
    async with await ChatClient.connect(ws_url, token) as c:
        conv = await c.request({"t": "room.join", "room": "lobby"})
        await c.send(conv["conv"], "hello")
"""

from __future__ import annotations

import asyncio
import itertools
import json
import urllib.error
import urllib.request
import uuid
from typing import Any

import msgpack
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Origin, Subprotocol

# Seconds a request waits for its reply.
REQUEST_TIMEOUT_S = 10.0
# Bytes the client accepts in one frame from the server (sync pages can be large).
CLIENT_MAX_FRAME = 16 * 1024 * 1024


class RequestError(Exception):
    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.frame = frame
        self.code = frame.get("code")


class ChatClient:
    def __init__(self, ws: ClientConnection, codec: str) -> None:
        self.ws = ws
        self.codec = codec
        self.ready: dict[str, Any] = {}
        self.pushes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.frames: list[dict[str, Any]] = []
        self._rids = itertools.count(1)
        self._waiting: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._collect: dict[Any, list[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    @classmethod
    async def connect(
        cls,
        url: str,
        token: str | None,
        *,
        codec: str = "msgpack",
        origin: str | None = None,
        auth: bool = True,
    ) -> ChatClient:
        sub = f"chatd.v1.{codec}"
        ws = await websockets.connect(
            url,
            subprotocols=[Subprotocol(sub)],
            origin=Origin(origin) if origin else None,
            max_size=CLIENT_MAX_FRAME,
            compression=None,
            open_timeout=REQUEST_TIMEOUT_S,
        )
        client = cls(ws, codec)
        client._reader = asyncio.get_running_loop().create_task(client._read())
        if auth:
            client.ready = await client.request({"t": "auth", "token": token})
        return client

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    def encode(self, frame: dict[str, Any]) -> bytes | str:
        if self.codec == "json":
            return json.dumps(frame, separators=(",", ":"))
        return msgpack.packb(frame, use_bin_type=True)

    def decode(self, data: bytes | str) -> dict[str, Any]:
        if isinstance(data, str):
            return json.loads(data)
        return msgpack.unpackb(data, raw=False)

    async def send_raw(self, data: bytes | str) -> None:
        await self.ws.send(data)

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.ws.send(self.encode(frame))

    async def _read(self) -> None:
        try:
            async for data in self.ws:
                frame = self.decode(data)
                self.frames.append(frame)
                rid = frame.get("rid")
                if rid is not None and rid in self._waiting:
                    t = frame.get("t")
                    if t == "msg" and rid in self._collect:
                        self._collect[rid].append(frame)
                        continue
                    fut = self._waiting.pop(rid)
                    if not fut.done():
                        fut.set_result(frame)
                    continue
                await self.pushes.put(frame)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(f"closed {self.ws.close_code}"))

    async def request(
        self, frame: dict[str, Any], *, timeout: float = REQUEST_TIMEOUT_S, raise_error: bool = True
    ) -> dict[str, Any]:
        rid = frame.get("rid") or next(self._rids)
        frame = {**frame, "rid": rid}
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        await self.send_frame(frame)
        reply = await asyncio.wait_for(fut, timeout)
        if raise_error and reply.get("t") == "error":
            raise RequestError(reply)
        return reply

    async def send(self, conv: int, text: str, cmid: str | None = None) -> dict[str, Any]:
        """Sends a message and returns its `ack`."""
        return await self.request(
            {"t": "send", "conv": conv, "text": text, "cmid": cmid or uuid.uuid4().hex}
        )

    async def sync(
        self, conv: int, after: int = 0, limit: int = 100
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Returns the page of `msg` frames and the `synced` frame."""
        rid = next(self._rids)
        self._collect[rid] = []
        try:
            synced = await self.request(
                {"t": "sync", "conv": conv, "after": after, "limit": limit, "rid": rid}
            )
            return self._collect[rid], synced
        finally:
            self._collect.pop(rid, None)

    async def sync_all(self, conv: int, after: int = 0) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page, synced = await self.sync(conv, after, 500)
            out.extend(page)
            if page:
                after = page[-1]["seq"]
            if not synced.get("more"):
                return out

    async def next_push(
        self, t: str | None = None, *, timeout: float = REQUEST_TIMEOUT_S
    ) -> dict[str, Any]:
        """The next pushed frame (of type t, skipping others)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no {t or 'push'} within {timeout}s")
            frame = await asyncio.wait_for(self.pushes.get(), left)
            if t is None or frame.get("t") == t:
                return frame

    async def wait_closed(self, timeout: float = REQUEST_TIMEOUT_S) -> int | None:
        await asyncio.wait_for(self.closed.wait(), timeout)
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


def _http(
    method: str, url: str, body: dict[str, Any] | None, token: str | None, headers: dict[str, str]
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in headers.items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw


async def api(
    base_url: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One HTTP call: (status, decoded JSON body)."""
    return await asyncio.to_thread(_http, method, base_url + path, body, token, headers or {})


async def register(
    base_url: str,
    username: str,
    password: str = "correct-horse-battery",
    birthdate: str = "1990-01-01",
    email: str | None = None,
    *,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Registers and returns `{user, token}`; raises on any other status than 201."""
    status, body = await api(
        base_url,
        "POST",
        "/api/register",
        {
            "username": username,
            "password": password,
            "birthdate": birthdate,
            "email": email or f"{username}@example.org",
        },
        headers=headers,
    )
    if status != 201:
        raise RuntimeError(f"register {username}: {status} {body}")
    return body
