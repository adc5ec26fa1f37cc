"""One measured step at a fixed send rate, and the search for the highest rate that holds."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness import CpuWatch, Generator, loadavg, log
from systems import Deployment

# The goal's latency bound, in milliseconds: a step passes with p99 below it and no loss.
P99_GOAL_MS = 50.0
# Generator CPU%, at or above which a step says nothing about the server: it does not count.
GEN_BOUND_PCT = 90.0
# Near the edge the search narrows the rate to within this factor (steps of 10%).
FINE_FACTOR = 1.1
# Seconds a step may take beyond its own windows (settling, a slow drain).
STEP_SLACK_S = 60.0


@dataclass(frozen=True, slots=True)
class Timing:
    warmup_s: float
    measure_s: float
    drain_s: float
    max_steps: int


def run_step(
    gen: Generator, dep: Deployment, rate: int, timing: Timing, *, no_abort: bool = False
) -> dict[str, Any]:
    watch = CpuWatch({**dep.groups, "generator": lambda: [gen.pid]})
    cmd = {
        "rate": rate,
        "warmup": timing.warmup_s,
        "measure": timing.measure_s,
        "drain": timing.drain_s,
        "runId": uuid.uuid4().hex[:8],  # cmids stay unique across steps
        "noAbort": no_abort,
    }
    timeout = timing.warmup_s + timing.measure_s + timing.drain_s + STEP_SLACK_S
    counters = getattr(dep, "counters", None)
    marks: list[dict[str, float]] = []

    def start() -> None:
        watch.start()
        if counters is not None:
            marks.append(counters())

    def stop() -> None:
        watch.stop()
        if counters is not None:
            marks.append(counters())

    row = gen.step(cmd, start, stop, timeout)
    if len(marks) == 2:
        row["server_metrics"] = _explain(marks[0], marks[1])
    row["cpu"] = dict(watch.result)
    row["load"] = loadavg()
    row["gen_bound"] = watch.result.get("generator", 0.0) >= GEN_BOUND_PCT
    p99 = row.get("p99_ms")
    row["ok"] = bool(
        not row["aborted"]
        and row["loss"] == 0
        and row["sent"] > 0
        and p99 is not None
        and p99 < P99_GOAL_MS
        and row["closed"] == 0
        and not row["errors"]
    )
    verdict = "gen-bound" if row["gen_bound"] else ("pass" if row["ok"] else "fail")
    log(
        f"  {dep.name}: {rate} msg/s -> {row['delivered_per_s']:,.0f} deliveries/s, "
        f"p99 {p99} ms, loss {row['loss']}, gen {watch.result.get('generator')}% "
        f"[{verdict}{', ' + row['aborted'] if row['aborted'] else ''}]"
    )
    return row


def _explain(a: dict[str, float], b: dict[str, float]) -> dict[str, Any]:
    """chatd's view of the window: its commit latency (send frame to commit) and gap fills."""
    d = {k: b[k] - a[k] for k in a}
    commits = d["chatd_send_commit_seconds_count"]
    if commits <= 0:
        return {"gap_fills": d["chatd_gap_fills_total"]}
    return {
        "commit_mean_ms": round(1000 * d["chatd_send_commit_seconds_sum"] / commits, 1),
        "commit_over_20ms_pct": round(
            100 * (1 - d['chatd_send_commit_seconds_bucket{le="0.02"}'] / commits), 1
        ),
        "commit_over_50ms_pct": round(
            100 * (1 - d['chatd_send_commit_seconds_bucket{le="0.05"}'] / commits), 1
        ),
        "gap_fills": d["chatd_gap_fills_total"],
        "messages_filled": d["chatd_messages_filled_total"],
    }


def search(
    step: Callable[[int], dict[str, Any]], start: int, timing: Timing, deadline: float
) -> list[dict[str, Any]]:
    """Doubles (or halves) from `start` until a step fails, then narrows between the last
    pass and the first failure to within FINE_FACTOR. A generator-bound step ends the
    climb: above it the generator, not the server, is measured."""
    rows: list[dict[str, Any]] = []
    lo: int | None = None
    hi: int | None = None
    rate = max(1, start)
    while len(rows) < timing.max_steps and time.monotonic() < deadline:
        row = step(rate)
        rows.append(row)
        if row["ok"] and not row["gen_bound"]:
            lo = rate if lo is None else max(lo, rate)
        else:
            hi = rate if hi is None else min(hi, rate)
        if row["closed"]:
            log("  connections were closed: the search stops here")
            break
        if hi is None:
            rate *= 2
        elif lo is None:
            if rate <= 1:
                break
            rate = max(1, rate // 2)
        else:
            if hi <= lo * FINE_FACTOR * 1.001:
                break
            ratio = hi / lo
            factor = math.sqrt(ratio) if ratio > FINE_FACTOR**2 else FINE_FACTOR
            rate = round(lo * factor)
            if rate <= lo or rate >= hi:
                break
    return rows


def best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    counted = [r for r in rows if r["ok"] and not r["gen_bound"]]
    return max(counted, key=lambda r: r["rate"]) if counted else None
