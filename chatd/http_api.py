"""The members' HTTP API: accounts, conversations, history (PROTOCOL.md section 6)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from chatd import views
from chatd.http_common import (
    caller,
    client_of,
    json_body,
    node_of,
    path_id,
    query_int,
    route,
    set_device_cookie,
)
from protocol.limits import SYNC_LIMIT_DEFAULT, SYNC_LIMIT_MAX


@route
async def register(request: Request) -> Response:
    body = await json_body(request)
    client, new_device = client_of(request)
    user, token = await node_of(request).accounts.do_register(body, client)
    response = JSONResponse({"user": views.user_object(user), "token": token}, status_code=201)
    set_device_cookie(response, new_device)
    return response


@route
async def login(request: Request) -> Response:
    body = await json_body(request)
    client, new_device = client_of(request)
    user, token = await node_of(request).accounts.do_login(body, client)
    response = JSONResponse({"user": views.user_object(user), "token": token})
    set_device_cookie(response, new_device)
    return response


@route
async def logout(request: Request) -> Response:
    session_id, user = await caller(request)
    await node_of(request).accounts.do_logout(session_id, user.id)
    return Response(status_code=204)


@route
async def me(request: Request) -> Response:
    _, user = await caller(request)
    return JSONResponse({"user": views.user_object(user)})


@route
async def conversations(request: Request) -> Response:
    _, user = await caller(request)
    convs = await node_of(request).chat.conversations_for(user.id)
    return JSONResponse({"conversations": [views.conv_object(c, user.id) for c in convs]})


@route
async def messages(request: Request) -> Response:
    _, user = await caller(request)
    conv_id = path_id(request, "conv")
    after = query_int(request, "after", 0, 0, 2**63 - 1)
    limit = query_int(request, "limit", SYNC_LIMIT_DEFAULT, 1, SYNC_LIMIT_MAX)
    # A conversation that does not exist answers as one the caller is not in.
    rows, more = await node_of(request).chat.history(user.id, conv_id, after, limit)
    out = []
    for m in rows:
        obj = views.message_object(m)
        del obj["t"]
        out.append(obj)
    return JSONResponse({"messages": out, "more": more})


def routes() -> list[BaseRoute]:
    return [
        Route("/api/register", register, methods=["POST"]),
        Route("/api/login", login, methods=["POST"]),
        Route("/api/logout", logout, methods=["POST"]),
        Route("/api/me", me, methods=["GET"]),
        Route("/api/conversations", conversations, methods=["GET"]),
        Route("/api/conversations/{conv}/messages", messages, methods=["GET"]),
    ]
