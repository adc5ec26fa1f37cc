"""The generator's configurations: rooms fan-out, DM pairs and idle connections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from systems import Chatd, Deployment

# Bytes of each message's text (its marker and send time included).
PAYLOAD_BYTES = 100


@dataclass(frozen=True, slots=True)
class Rooms:
    rooms: int
    per_room: int
    # chatd accounts per room: each has per_room / accounts_per_room connections in it.
    accounts_per_room: int
    senders_per_room: int = 2


@dataclass(frozen=True, slots=True)
class Dms:
    pairs: int


def _client(dep: Deployment, node: int, account: int | None) -> dict[str, Any]:
    client: dict[str, Any] = {"url": dep.urls[node % len(dep.urls)]}
    if isinstance(dep, Chatd):
        assert account is not None
        client["token"] = dep.accounts[account].token
    return client


# Milliseconds one client's setup (auth, then its joins or DM opens, one after the other)
# may take in the generator: opening 20 DMs on a busy machine takes a while.
CLIENT_SETUP_TIMEOUT_MS = 600_000


def _base(dep: Deployment) -> dict[str, Any]:
    return {
        "setupTimeoutMs": CLIENT_SETUP_TIMEOUT_MS,
        "kind": dep.kind,
        "codec": getattr(dep, "codec", "json"),
        "payloadBytes": PAYLOAD_BYTES,
    }


def rooms_config(dep: Deployment, plan: Rooms) -> dict[str, Any]:
    """Room r's members alternate between the nodes; its first senders_per_room members
    send (on a two-node system, one on each node)."""
    clients: list[dict[str, Any]] = []
    senders: list[dict[str, Any]] = []
    for r in range(plan.rooms):
        for i in range(plan.per_room):
            account = r * plan.accounts_per_room + i % plan.accounts_per_room
            client = _client(dep, i, account)
            client["targets"] = [{"room": f"bench-room-{r}"}]
            if i < plan.senders_per_room:
                senders.append({"client": len(clients), "target": 0})
            clients.append(client)
    return {**_base(dep), "clients": clients, "senders": senders}


def accounts_for_rooms(plan: Rooms) -> int:
    return plan.rooms * plan.accounts_per_room


def dm_pairs(accounts: int, pairs: int) -> list[tuple[int, int]]:
    """Distinct pairs (a, a + k) for odd k: with accounts alternating over two nodes,
    every pair spans both nodes. There are about accounts**2 / 4 of them."""
    out: list[tuple[int, int]] = []
    for k in range(1, accounts, 2):
        for a in range(accounts - k):
            out.append((a, a + k))
            if len(out) >= pairs:
                return out
    return out


def dms_config(dep: Deployment, plan: Dms, accounts: int) -> dict[str, Any]:
    """One connection per account (account i on node i % 2), one sender per pair. On the
    peers a DM is a room of two."""
    pairs = dm_pairs(accounts, plan.pairs)
    clients = [_client(dep, a, a) for a in range(accounts)]
    for c in clients:
        c["targets"] = []
    senders: list[dict[str, Any]] = []
    for a, b in pairs:
        for me, other in ((a, b), (b, a)):
            if isinstance(dep, Chatd):
                target: dict[str, Any] = {"dm": dep.accounts[other].id}
            else:
                target = {"room": f"dm-{a}-{b}"}
            clients[me]["targets"].append(target)
        senders.append({"client": a, "target": len(clients[a]["targets"]) - 1})
    return {**_base(dep), "clients": clients, "senders": senders}


def idle_config(dep: Deployment, total: int, accounts: int) -> dict[str, Any]:
    """`total` connections that only authenticate (chatd) or connect (peers), spread over
    local addresses 127.0.0.2... so that the ephemeral ports of one address suffice."""
    clients = []
    for n in range(total):
        client = _client(dep, 0, n % accounts if isinstance(dep, Chatd) else None)
        client["localAddress"] = f"127.0.0.{2 + n % 16}"
        client["targets"] = []
        clients.append(client)
    return {**_base(dep), "clients": clients, "senders": [], "connectInitially": 0}
