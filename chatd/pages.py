"""The member page at / and its static files, with a strict Content-Security-Policy."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"

# No inline scripts or styles, no third-party origins: user text can never run as code.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; media-src 'self' data:; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def page(path: Path) -> Response:
    return FileResponse(path, media_type="text/html", headers=SECURITY_HEADERS)


async def member_page(request: Request) -> Response:
    return page(STATIC / "index.html")


class _SecureStatic(StaticFiles):
    async def get_response(self, path: str, scope):
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def routes() -> list[BaseRoute]:
    return [
        Route("/", member_page, methods=["GET"]),
        Mount("/static", app=_SecureStatic(directory=STATIC), name="static"),
    ]
