"""Runs a node under uvicorn, with chatd's own SIGTERM handling.

uvicorn re-raises SIGTERM after its shutdown, which would end the process with 143;
chatd closes its connections with 1012, lets the commits under way finish and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Generator

import uvicorn

from chatd.app import build_app
from chatd.config import Config
from chatd.wire import WireProtocol
from chatd.ws import direct_ws
from protocol.codes import CloseCode
from protocol.limits import MAX_FRAME_BYTES

log = logging.getLogger("chatd.serve")

# Seconds uvicorn waits for a WebSocket close handshake before dropping the TCP connection.
WS_CLOSE_TIMEOUT_S = 2.0
# Seconds between WebSocket pings from the server; 0 turns them off.
WS_PING_INTERVAL_S = 20.0


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Our handlers are installed on the loop in run(); uvicorn's would re-raise.
        yield


async def run(config: Config) -> int:
    app = build_app(config)
    node = app.state.node
    uv_config = uvicorn.Config(
        direct_ws(app),
        host=config.server.host,
        port=config.server.port,
        ws=WireProtocol,  # uvicorn's websockets-sansio, with chatd's direct writes
        ws_max_size=MAX_FRAME_BYTES,
        ws_per_message_deflate=False,
        ws_ping_interval=WS_PING_INTERVAL_S,
        ws_ping_timeout=WS_PING_INTERVAL_S,
        proxy_headers=False,  # chatd reads forwarding headers itself, from trusted proxies only
        server_header=False,
        access_log=False,
        log_level=config.log.level,
        lifespan="on",
        timeout_graceful_shutdown=int(config.server.shutdown_grace_s),
        loop="none",  # the loop is cli.py's: uvicorn.Config's setting applies to uvicorn.run only
    )
    server = _Server(uv_config)
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        log.info("stopping: closing connections with 1012")
        node.shutting_down = True
        if hasattr(node, "hub"):
            node.hub.close_all(CloseCode.RESTARTING)
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await server.serve()
    return 0 if server.started else 1
