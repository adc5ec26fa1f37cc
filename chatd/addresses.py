"""Who is on the other end: the client address (forwarding headers only from trusted
proxies) and whether a WebSocket's Origin may open /ws."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def _trusted(address: str, proxies: tuple[Network, ...]) -> bool:
    if not proxies:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def client_address(
    peer: str | None, headers: Mapping[str, str], proxies: tuple[Network, ...]
) -> str:
    """The right-most X-Forwarded-For address that is not a trusted proxy, when the peer
    itself is trusted; otherwise the peer."""
    peer = peer or ""
    if not _trusted(peer, proxies):
        return peer
    forwarded = headers.get("x-forwarded-for")
    if not forwarded:
        return peer
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop
    return hops[0] if hops else peer


def request_host(peer: str | None, headers: Mapping[str, str], proxies: tuple[Network, ...]) -> str:
    """The host[:port] the client asked for: X-Forwarded-Host from a trusted proxy, else Host."""
    if _trusted(peer or "", proxies) and headers.get("x-forwarded-host"):
        return headers["x-forwarded-host"].split(",")[0].strip().lower()
    return headers.get("host", "").lower()


def _host_port(netloc: str, scheme: str) -> tuple[str, int | None]:
    parts = urlsplit(f"{scheme}://{netloc}")
    try:
        port = parts.port
    except ValueError:
        return netloc, None
    if port is None:
        port = {"http": 80, "ws": 80, "https": 443, "wss": 443}.get(scheme)
    return (parts.hostname or ""), port


def origin_allowed(
    origin: str | None,
    *,
    host: str,
    scheme: str,
    allowed: Sequence[str],
) -> bool:
    """No Origin (a non-browser client) is allowed; else its host and port must equal the
    request's, or it must be listed."""
    if origin is None:
        return True
    origin = origin.strip().lower()
    if origin in (a.rstrip("/").lower() for a in allowed):
        return True
    parts = urlsplit(origin)
    if not parts.scheme or not parts.netloc:
        return False
    o_host, o_port = _host_port(parts.netloc, parts.scheme)
    default_scheme = "https" if scheme in ("https", "wss") else "http"
    r_host, r_port = _host_port(host, default_scheme)
    return bool(o_host) and o_host == r_host and o_port == r_port
