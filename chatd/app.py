"""The Starlette application of one node: routes, and the node's start and stop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import BaseRoute, WebSocketRoute

from chatd import http_api, http_ops, pages
from chatd.addresses import parse_networks
from chatd.config import Config
from chatd.node import Node
from chatd.ws import ws_endpoint


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
        *http_ops.routes(),
        *(extra_routes or []),
        *pages.routes(),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.node = node
    app.state.trusted_proxies = parse_networks(config.server.trusted_proxies)
    return app
