"""The benchmark's sections: fan-out and DMs (rate searches), idle connections, storage."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import spy
from harness import REPO, SERVER_CORE, Generator, fd_hard_limit, log, pin, rss_kib, tree
from search import Timing, best, run_step, search
from support.postgres import PrivatePostgres
from systems import Chatd, Deployment
from workloads import Dms, Rooms, dms_config, idle_config, rooms_config

# Seconds the generator may take to connect and join everyone.
SETUP_TIMEOUT_S = 600.0
# Seconds after a batch of idle connections before RSS is read (allocations settle).
IDLE_SETTLE_S = 3.0
# Descriptors a process keeps for other things than idle connections (logs, epoll, the
# database and broker connections, the listening socket).
FD_HEADROOM = 100


@dataclass(frozen=True, slots=True)
class Mode:
    name: str
    rooms: Rooms
    dms: Dms
    timing: Timing
    dm_timing: Timing
    idle_counts: tuple[int, ...]
    # The peers' and bare baselines' counts: their RSS grows linearly, so fewer do.
    peer_idle_counts: tuple[int, ...]
    storage_messages: int
    storage_appenders: int
    # Seconds the whole run may take; a search that would pass it stops early.
    budget_s: float
    # Systems that take part in the DM and idle sections (all take part in fan-out).
    dm_systems: tuple[str, ...]
    idle_systems: tuple[str, ...]
    # uvicorn WebSocket stacks measured bare for the idle baseline.
    bare_ws_impls: tuple[str, ...]


QUICK = Mode(
    name="quick",
    rooms=Rooms(rooms=5, per_room=50, accounts_per_room=2),
    dms=Dms(pairs=25),
    timing=Timing(warmup_s=1.0, measure_s=2.0, drain_s=2.0, max_steps=4),
    dm_timing=Timing(warmup_s=1.0, measure_s=2.0, drain_s=2.0, max_steps=2),
    idle_counts=(250, 1000),
    peer_idle_counts=(250, 1000),
    storage_messages=5_000,
    storage_appenders=200,
    budget_s=165.0,
    dm_systems=("chatd",),
    idle_systems=("chatd", "starlette"),
    bare_ws_impls=("websockets-sansio",),
)
FULL = Mode(
    name="full",
    rooms=Rooms(rooms=20, per_room=50, accounts_per_room=10),
    dms=Dms(pairs=2000),
    timing=Timing(warmup_s=3.0, measure_s=20.0, drain_s=5.0, max_steps=6),
    dm_timing=Timing(warmup_s=3.0, measure_s=10.0, drain_s=5.0, max_steps=4),
    idle_counts=(5000, 20000),
    peer_idle_counts=(5000,),
    storage_messages=60_000,
    storage_appenders=500,
    budget_s=1320.0,
    dm_systems=("chatd", "socketio-node"),
    idle_systems=("chatd", "websockets", "socketio-node", "python-socketio", "starlette"),
    bare_ws_impls=("websockets-sansio", "websockets", "wsproto"),
)

# Where each system's search starts, in messages/s: below what the issue (or, for chatd,
# the last runs) measured for it (a busy machine carries less), so that the climb is short
# and the steps left narrow the edge; the search finds it from anywhere, doubling or
# halving.
START_RATE = {"chatd": 400, "websockets": 400, "socketio-node": 400, "python-socketio": 50}
DM_START_RATE = {"chatd": 200, "websockets": 800, "socketio-node": 800, "python-socketio": 100}


def _searched(
    key: str,
    dep: Deployment,
    config: dict[str, Any],
    start: int,
    timing: Timing,
    deadline: float,
    label: str,
    profile: bool = False,
) -> dict[str, Any]:
    gen = Generator(config, dep.workdir, label)
    prof = None
    try:
        ready = gen.wait_for("ready", SETUP_TIMEOUT_S)
        log(
            f"{dep.name} {label}: {len(config['clients'])} clients ready "
            f"in {ready['setup_s']:.1f} s"
        )
        dep.pin()
        rows = search(lambda r: run_step(gen, dep, r, timing), start, timing, deadline)
        if profile:
            # The busiest step without loss (p99 may have failed): a loaded node.
            kept = [r["rate"] for r in rows if r["loss"] == 0]
            prof = [_profiled(gen, dep, max(kept) if kept else 1, timing, g) for g in (False, True)]
    finally:
        gen.close()
    return {
        "profile": prof,
        "system": key,
        "name": dep.name,
        "nodes": dep.nodes,
        "durable": dep.durable,
        "clients": len(config["clients"]),
        "senders": len(config["senders"]),
        "rows": rows,
        "best": best(rows),
    }


def gen_label(gen: Generator) -> str:
    return gen.name


def _profiled(
    gen: Generator, dep: Deployment, rate: int, timing: Timing, gil: bool
) -> dict[str, Any]:
    """One more step at `rate` with py-spy on node 1 through its warm-up and window."""
    out = dep.workdir / f"node1.{gen.name}.py-spy{'-gil' if gil else ''}.txt"
    pid = dep.groups["node1"]()[0]
    sampler = spy.record(pid, timing.warmup_s + timing.measure_s, out, gil)
    # The whole window, even if it fails: the profile is what is wanted of this step.
    row = run_step(gen, dep, rate, timing, no_abort=True)
    spy.finish(sampler)
    summary = spy.summarise(out)
    summary.update(
        rate=rate,
        gil=gil,
        workload="DM" if gen_label(gen) == "dms" else "fan-out",
        delivered_per_s=row["delivered_per_s"],
        node_cpu=row["cpu"].get("node1"),
        p99_ms=row["p99_ms"],
    )
    return summary


def fanout(
    key: str, dep: Deployment, mode: Mode, deadline: float, profile: bool = False
) -> dict[str, Any]:
    config = rooms_config(dep, mode.rooms)
    return _searched(key, dep, config, START_RATE[key], mode.timing, deadline, "fanout", profile)


def dms(
    key: str, dep: Deployment, mode: Mode, accounts: int, deadline: float, profile: bool = False
) -> dict[str, Any]:
    config = dms_config(dep, mode.dms, accounts)
    out = _searched(key, dep, config, DM_START_RATE[key], mode.dm_timing, deadline, "dms", profile)
    out["pairs"] = len(config["senders"])
    out["accounts"] = accounts
    return out


def idle(key: str, dep: Deployment, url: str, pid: int, mode: Mode) -> dict[str, Any]:
    """RSS of one node before and after idle connections, all on that node.

    The hard limit on descriptors (which this sandbox does not let us raise) caps both
    the node and each generator process: the counts are capped just below it, and the
    connections are spread over several generator processes.
    """
    accounts = len(dep.accounts) if isinstance(dep, Chatd) else 0
    wanted = mode.idle_counts if isinstance(dep, Chatd) else mode.peer_idle_counts
    cap = fd_hard_limit() - FD_HEADROOM
    counts = sorted({min(n, cap) for n in wanted})
    config = idle_config(dep, max(counts), accounts)
    for client in config["clients"]:
        client["url"] = url
    n_gens = -(-max(counts) // cap)
    # RSS does not depend on the core: the node stays unpinned while the connections
    # come in (each is a token lookup and a conversation list read, which takes a while).
    gens = [
        Generator({**config, "clients": config["clients"][g::n_gens]}, dep.workdir, f"idle{g + 1}")
        for g in range(n_gens)
    ]
    points: list[dict[str, Any]] = []
    out: dict[str, Any] = {"system": key, "name": dep.name, "points": points}
    try:
        for gen in gens:
            gen.wait_for("ready", SETUP_TIMEOUT_S)
        time.sleep(IDLE_SETTLE_S)
        base = out["base_rss_kib"] = rss_kib(pid)
        prev_n, prev_rss = 0, base
        for n in counts:
            started = time.monotonic()
            for g, gen in enumerate(gens):
                gen.command({"cmd": "connect", "upto": (n - g + n_gens - 1) // n_gens})
            opened = sum(gen.wait_for("connected", SETUP_TIMEOUT_S)["open"] for gen in gens)
            seconds = time.monotonic() - started
            time.sleep(IDLE_SETTLE_S)
            rss = rss_kib(pid)
            points.append(
                {
                    "connections": n,
                    "open": opened,
                    "rss_kib": rss,
                    "kib_per_conn": round((rss - base) / n, 1),
                    "marginal_kib_per_conn": round((rss - prev_rss) / (n - prev_n), 1),
                    "connect_s": round(seconds, 1),
                }
            )
            log(
                f"  {dep.name} idle: {n} connections, RSS {rss} KiB, "
                f"{points[-1]['kib_per_conn']} KiB each"
            )
            prev_n, prev_rss = n, rss
    except Exception as exc:
        if not points:
            raise
        out["error"] = str(exc)[:300]  # keep the points measured before it
    finally:
        for gen in gens:
            gen.close()
    return out


_WRITER_LINE = re.compile(
    r"^(messages/s|mean batch size|latency p50|latency p99|elapsed)\s+([\d,.]+)"
)


def _bench_writer(url: str | None, mode: Mode, workdir: Path) -> dict[str, Any]:
    argv = [
        "taskset",
        "-c",
        str(SERVER_CORE),
        sys.executable,
        "-m",
        "persistence.bench_writer",
        "--messages",
        str(mode.storage_messages),
        "--concurrency",
        str(mode.storage_appenders),
        "--conversations",
        "20",
    ]
    if url:
        argv += ["--url", url]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"bench_writer failed:\n{done.stdout}{done.stderr}")
    out: dict[str, Any] = {}
    for line in done.stdout.splitlines():
        m = _WRITER_LINE.match(line)
        if m:
            out[m.group(1)] = float(m.group(2).replace(",", ""))
    return out


def storage(mode: Mode, workdir: Path) -> list[dict[str, Any]]:
    """persistence.bench_writer (the group-commit writer, many concurrent appenders) on
    SQLite and on a private PostgreSQL, both on the server core."""
    rows = []
    log("storage: SQLite")
    rows.append({"backend": "SQLite (WAL, synchronous=FULL)", **_bench_writer(None, mode, workdir)})
    pg = PrivatePostgres(log_path=workdir / "storage-postgres.log")
    try:
        pg.start()
        pg.create_database("chatd_storage")
        pin(tree(pg.pid), SERVER_CORE)
        log("storage: PostgreSQL")
        rows.append(
            {
                "backend": "PostgreSQL (fsync, synchronous_commit=on)",
                **_bench_writer(pg.url("chatd_storage"), mode, workdir),
            }
        )
    finally:
        pg.close()
    for row in rows:
        row["messages"] = mode.storage_messages
        row["appenders"] = mode.storage_appenders
        log(
            f"  {row['backend']}: {row.get('messages/s', 0):,.0f} msg/s, "
            f"batch {row.get('mean batch size')}"
        )
    return rows
