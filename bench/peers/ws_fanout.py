"""The ceiling: a bare fan-out server on the `websockets` library, one process, no storage.

python ws_fanout.py PORT
Frames are JSON: {"t":"join","room"} is answered {"t":"joined","room"}; {"t":"send","room",
"text"} goes to every member of the room (the sender too) as {"t":"msg","room","text"},
encoded once and broadcast.
"""

from __future__ import annotations

import asyncio
import json
import sys

from websockets.asyncio.server import ServerConnection, broadcast, serve

# Bytes one incoming WebSocket message may have, as chatd's limit.
MAX_FRAME_BYTES = 64 * 1024


async def main(port: int) -> None:
    rooms: dict[str, set[ServerConnection]] = {}

    async def handler(ws: ServerConnection) -> None:
        joined: list[str] = []
        try:
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame.get("t")
                if kind == "send":
                    room = frame["room"]
                    out = json.dumps({"t": "msg", "room": room, "text": frame["text"]})
                    broadcast(rooms.get(room, ()), out)
                elif kind == "join":
                    room = frame["room"]
                    rooms.setdefault(room, set()).add(ws)
                    joined.append(room)
                    await ws.send(json.dumps({"t": "joined", "room": room}))
        finally:
            for room in joined:
                rooms.get(room, set()).discard(ws)

    async with serve(
        handler, "127.0.0.1", port, compression=None, max_size=MAX_FRAME_BYTES, backlog=4096
    ):
        print(f"listening on {port}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
