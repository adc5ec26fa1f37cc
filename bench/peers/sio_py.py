"""python-socketio with AsyncRedisManager, as an ASGI app for uvicorn; no storage.

BENCH_REDIS_URL=redis://... uvicorn sio_py:app --port PORT
Events: `join` (a room name; acked) and `send` ({room, text}), which is emitted to the
room, the sender included, on every node through Redis.
"""

from __future__ import annotations

import os
from typing import Any

import socketio

sio = socketio.AsyncServer(
    async_mode="asgi",
    client_manager=socketio.AsyncRedisManager(os.environ["BENCH_REDIS_URL"]),
    transports=["websocket"],
    cors_allowed_origins="*",
)


@sio.event
async def join(sid: str, room: str) -> bool:
    await sio.enter_room(sid, room)
    return True


@sio.event
async def send(sid: str, message: dict[str, Any]) -> None:
    await sio.emit("msg", message, room=message["room"])


app = socketio.ASGIApp(sio)
