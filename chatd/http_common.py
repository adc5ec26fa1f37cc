"""What every HTTP route shares: JSON bodies, the error shape, the caller and its client."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chatd import auth
from chatd.accounts import Client, FieldErrors
from chatd.addresses import client_address
from chatd.errors import Refused
from chatd.node import Node
from persistence.database import StorageUnavailable
from persistence.records import User
from protocol.errors import ProtocolError

log = logging.getLogger("chatd.http")

# Bytes of a JSON request body we read; larger bodies are refused.
MAX_BODY_BYTES = 64 * 1024
# Seconds the device cookie lives (two years: it links a device across accounts).
DEVICE_COOKIE_S = 2 * 365 * 24 * 3600
DEVICE_COOKIE = "chatd_device"
# Characters of a device id we keep.
MAX_DEVICE_CHARS = 128
# Characters of a user agent we keep.
MAX_USER_AGENT_CHARS = 512

Handler = Callable[[Request], Awaitable[Response]]


def error(
    status: int,
    code: str,
    message: str,
    *,
    fields: dict[str, str] | None = None,
    retry_after_ms: int | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    headers = {}
    if retry_after_ms is not None:
        headers["Retry-After"] = str(max(1, -(-retry_after_ms // 1000)))
    return JSONResponse({"error": body}, status_code=status, headers=headers)


class BadRequest(Exception):
    pass


def node_of(request: Request) -> Node:
    return request.app.state.node


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest("body too large")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: arrays nested some thousands deep, which json.loads cannot take.
        raise BadRequest("body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("body is not a JSON object")
    return body


def client_of(request: Request) -> tuple[Client, str | None]:
    """The caller's address, device and user agent; a new device id when it had none."""
    proxies = request.app.state.trusted_proxies
    peer = request.client.host if request.client else None
    address = client_address(peer, request.headers, proxies)
    device = request.headers.get("x-device-id") or request.cookies.get(DEVICE_COOKIE)
    new_device = None
    if not device:
        device = new_device = auth.new_device_id()
    ua = request.headers.get("user-agent", "")[:MAX_USER_AGENT_CHARS]
    return Client(address=address, device=device[:MAX_DEVICE_CHARS], user_agent=ua), new_device


def set_device_cookie(response: Response, device: str | None) -> None:
    if device:
        response.set_cookie(
            DEVICE_COOKIE, device, max_age=DEVICE_COOKIE_S, httponly=True, samesite="lax"
        )


async def caller(request: Request) -> tuple[int, User]:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refused("unauthenticated", "a bearer token is required")
    found = await node_of(request).accounts.authenticate(token.strip())
    if found is None:
        raise Refused("unauthenticated", "bad, expired or revoked token")
    return found


def route(handler: Handler) -> Handler:
    """Turns every refusal into PROTOCOL.md's error shape; nothing escapes as a bare 500."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except BadRequest as exc:
            return error(400, "bad_request", str(exc))
        except FieldErrors as exc:
            return error(422, "invalid", "some fields are invalid", fields=exc.fields)
        except ProtocolError as exc:
            fields = {exc.field: exc.message} if exc.field else None
            return error(422, "invalid", exc.message, fields=fields)
        except Refused as exc:
            fields = {exc.field: exc.message} if exc.field and exc.code == "invalid" else None
            return error(
                exc.status, exc.code, exc.message, fields=fields, retry_after_ms=exc.retry_after_ms
            )
        except StorageUnavailable:
            return error(503, "unavailable", "storage is unavailable, retry later")
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return error(500, "internal", "internal error")

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Refused("invalid", f"{name} must be a whole number", field=name) from None
    if not low <= value <= high:
        raise Refused("invalid", f"{name} must be {low} to {high}", field=name)
    return value


def path_id(request: Request, name: str) -> int:
    raw = request.path_params.get(name, "")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise Refused("not_found", "no such thing") from None
    if not 1 <= value <= 2**63 - 1:
        raise Refused("not_found", "no such thing")
    return value
