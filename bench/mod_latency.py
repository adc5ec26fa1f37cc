"""The moderation section: report-to-console and kick-to-close latency across chatd's two
nodes, on the deployment the searches used (PostgreSQL, Redis, server side pinned).

A member on node 1 files a report; the time until a moderator subscribed on node 2 gets
its `report.created` push. Then a member connected once on each node is kicked through
node 2's API; the time until both connections are closed (4003). The moderation tests'
helpers make the accounts (members through the API, staff through the CLI).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from harness import REPO
from systems import Chatd

sys.path.insert(0, str(REPO / "tests" / "moderation"))

from modkit import PUSH_TIMEOUT_S, ModKit, latency_summary, next_event

# Seconds the whole section may take.
SECTION_TIMEOUT_S = 180.0


async def _measure(dep: Chatd, reports: int, kicks: int) -> dict[str, Any]:
    db = dep.env["CHATD_DATABASE_URL"]
    one, two = ModKit(dep.servers[0], db), ModKit(dep.servers[1], db)
    try:
        moderator = await two.staff("moderator")
        console = await two.connect(moderator)
        await console.request({"t": "mod.subscribe"})
        reporter = await one.member("modrep", age=15)
        target = await one.member("modtgt", age=45)
        reporting = await one.connect(reporter)
        report_latencies = []
        for n in range(reports):
            started = time.perf_counter()
            reply = await reporting.request(
                {"t": "report", "category": "minor_sexual", "user": target.id, "note": f"#{n}"}
            )
            await next_event(console, "report.created", report__id=reply["report"]["id"])
            report_latencies.append(time.perf_counter() - started)
        kick_latencies = []
        for n in range(kicks):
            on_one, on_two = await one.connect(target), await two.connect(target)
            started = time.perf_counter()
            await two.ok(
                "POST", f"/api/mod/users/{target.id}/kick", {"reason": f"kick {n}"}, as_=moderator
            )
            codes = await asyncio.gather(
                on_one.wait_closed(PUSH_TIMEOUT_S), on_two.wait_closed(PUSH_TIMEOUT_S)
            )
            kick_latencies.append(time.perf_counter() - started)
            if codes != [4003, 4003]:
                raise RuntimeError(f"a kick closed with {codes}, not 4003 on both nodes")
        return {
            "system": "chatd",
            "report_to_console": latency_summary(report_latencies),
            "kick_to_close": latency_summary(kick_latencies),
        }
    finally:
        await one.close()
        await two.close()


def moderation(dep: Chatd, reports: int, kicks: int) -> dict[str, Any]:
    dep.pin()
    return asyncio.run(asyncio.wait_for(_measure(dep, reports, kicks), SECTION_TIMEOUT_S))
