"""chatd: the server. How the modules fit:

config (settings, read once) -> node (wiring) -> app (Starlette routes, lifespan).
ws (the WebSocket adapter) feeds session (frame handlers), which uses chat (rules and
actions on conversations and messages) and accounts (register, login, tokens).
hub holds this node's connections and delivers what the broker (broker_memory,
broker_redis) brings, in seq order. http_* are the HTTP routes, pages the web pages,
cli and serve the command line, client a small asyncio client for tests and bots.
"""
