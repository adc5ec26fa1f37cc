"""Operations endpoints: liveness, readiness (storage, and whether the broker is up), metrics."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from chatd.http_common import node_of


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True, "node": node_of(request).node_id})


async def readyz(request: Request) -> Response:
    """200 while storage answers; a broker outage is ridden out, so it only shows here."""
    storage_ok, body = await node_of(request).ready()
    return JSONResponse(body, status_code=200 if storage_ok else 503)


async def metrics(request: Request) -> Response:
    node = node_of(request)
    return Response(node.metrics.render(), media_type=node.metrics.content_type)


def routes() -> list[BaseRoute]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
