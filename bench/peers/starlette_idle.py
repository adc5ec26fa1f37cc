"""Bare Starlette under uvicorn: a WebSocket endpoint that accepts and reads, nothing else.

The idle-connection baseline for chatd (same uvicorn, same settings); run with the
project's venv: uvicorn starlette_idle:app --ws websockets-sansio ...
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket


async def endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
