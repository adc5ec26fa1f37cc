"""PostgreSQL stops for a while under two nodes that are taking sends: sends get
`unavailable`, /readyz says 503, nothing acked is lost; once it is back sends succeed
again, and a cmid sent again after `unavailable` is stored once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from clusterkit import (
    DELIVERY_TIMEOUT_S,
    POLL_S,
    Pair,
    Stream,
    check_acked_stored,
    check_live_exactly_once,
    join_room,
    make_members,
    readyz,
    resend,
    send_one,
    start_stream,
    truth,
    unique,
    wait_live_complete,
)
from support.postgres import PrivatePostgres
from support.wait import async_wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

# Sends per second of each sender.
RATE = 20.0
# Refusals each sender must see while the database is down.
REFUSED_WHILE_DOWN = 3
# Seconds for /readyz to change its answer, and for sends to be acked again.
STATE_TIMEOUT_S = 30.0


def refused(stream: Stream) -> list[str]:
    return [s.error["code"] for s in stream.sent if s.error is not None]


async def ready_status(pair: Pair, want: int) -> None:
    async def check() -> bool:
        answers = [await readyz(node) for node in pair.nodes]
        return all(status == want for status, _ in answers)

    await async_wait_until(check, STATE_TIMEOUT_S, 0.1, message=f"/readyz {want} on both nodes")


async def test_postgres_stop_refuses_sends_and_loses_nothing(
    fresh_pair: Callable[..., Pair], restartable_postgres: PrivatePostgres, redis_url: str
) -> None:
    pair = fresh_pair(redis_url)  # on a database of the private cluster stopped below
    members = await make_members(pair.db_url, "pg", 4)
    try:
        await asyncio.gather(*(m.connect(pair.nodes[i % 2]) for i, m in enumerate(members)))
        conv = await join_room(members, unique("Durable "))
        streams = [
            start_stream(members[0].client, conv, count=100_000, rate=RATE),  # node 1
            start_stream(members[1].client, conv, count=100_000, rate=RATE),  # node 2
        ]
        await async_wait_until(
            lambda: all(len(s.acked) >= 10 for s in streams), DELIVERY_TIMEOUT_S, POLL_S
        )
        await ready_status(pair, 200)
        acked_before = {s.cmid for st in streams for s in st.acked}

        restartable_postgres.stop("fast")
        await ready_status(pair, 503)
        await async_wait_until(
            lambda: all(len(refused(s)) >= REFUSED_WHILE_DOWN for s in streams),
            STATE_TIMEOUT_S,
            POLL_S,
            message="sends were not refused while the database was down",
        )
        restartable_postgres.start()
        await ready_status(pair, 200)
        acks_at_restart = [len(s.acked) for s in streams]
        await async_wait_until(
            lambda: all(
                len(s.acked) >= n + 10 for s, n in zip(streams, acks_at_restart, strict=True)
            ),
            STATE_TIMEOUT_S,
            POLL_S,
            message="sends did not succeed again after the database came back",
        )
        for s in streams:
            s.stop.set()
            await s.wait()
            codes = set(refused(s))
            assert codes == {"unavailable"}, f"refusals while the database was down: {codes}"
            for sent in s.sent:
                if sent.error is not None:
                    assert sent.error.get("cmid") == sent.cmid

        # The client sends what was refused again, same cmids; then once more: a retry
        # of a stored cmid answers with its first ack, no second message.
        for s, m in zip(streams, members[:2], strict=True):
            retried = [x for x in s.sent if x.ack is None]
            await resend(m.client, retried)
            assert all(x.ack is not None for x in retried), [x.error for x in retried][:3]
            again = retried[:5]
            first_acks = [dict(x.ack or {}) for x in again]
            for x in again:
                await send_one(m.client, x)
            for x, first in zip(again, first_acks, strict=True):
                assert x.ack is not None
                assert (x.ack["seq"], x.ack["id"]) == (first["seq"], first["id"])

        rows = await truth(members[2].client, conv)
        assert acked_before <= set(rows.values()), "a message acked before the outage is gone"
        check_acked_stored(streams, {conv: rows})
        await wait_live_complete(members, conv, max(rows))
        for m in members:
            check_live_exactly_once(m, conv, rows)
    finally:
        await asyncio.gather(*(m.close() for m in members))
