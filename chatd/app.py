"""The Starlette application of one node: routes, and the node's start and stop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

import moderation
from chatd import http_api, http_mod, http_ops, pages
from chatd.addresses import parse_networks
from chatd.config import Config
from chatd.node import Node
from chatd.ws import ws_endpoint

# The moderation console: one page and its static files, under the members' page's CSP.
# (__path__, not __file__: an editable install may present the package as a namespace.)
CONSOLE_STATIC = Path(next(iter(moderation.__path__))) / "static"


async def console_page(request: Request) -> Response:
    return pages.page(CONSOLE_STATIC / "console.html")


def console_routes() -> list[BaseRoute]:
    return [
        Route("/console", console_page, methods=["GET"]),
        Mount("/console/static", app=pages._SecureStatic(directory=CONSOLE_STATIC)),
    ]


def build_app(config: Config, *, extra_routes: list[BaseRoute] | None = None) -> Starlette:
    node = Node(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await node.start()
        try:
            yield
        finally:
            await node.stop()

    routes: list[BaseRoute] = [
        WebSocketRoute("/ws", ws_endpoint),
        *http_api.routes(),
        *http_mod.routes(),
        *http_ops.routes(),
        *console_routes(),
        *(extra_routes or []),
        *pages.routes(),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.node = node
    app.state.trusted_proxies = parse_networks(config.server.trusted_proxies)
    return app
