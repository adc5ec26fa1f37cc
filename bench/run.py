"""Runs the benchmark: python bench/run.py [--quick] [--only NAME[,NAME...]].

NAME is a section (fanout, dms, idle, storage, moderation, profile) or a system (chatd, websockets,
socketio-node, python-socketio, starlette: bare Starlette, idle only); sections and systems
combine (--only fanout,chatd).
Prints the markdown table and writes it, with the raw figures as JSON, to bench/results/.
Loopback only; every process it starts it stops by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"

try:  # the harness needs the project's venv (asyncpg, redis for the test support classes)
    import asyncpg  # noqa: F401
except ImportError:
    if VENV_PYTHON.exists() and Path(sys.executable) != VENV_PYTHON:
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__, *sys.argv[1:]])
    raise

from harness import BENCH, ensure_peers, loadavg, log, machine, raise_fd_limit  # noqa: E402
from mod_latency import moderation  # noqa: E402
from report import render  # noqa: E402
from sections import FULL, QUICK, Mode, dms, fanout, idle, storage  # noqa: E402
from systems import PEERS, Chatd, Deployment  # noqa: E402
from workloads import accounts_for_rooms  # noqa: E402

SECTIONS = ("fanout", "dms", "idle", "storage", "moderation", "profile")
# Sections a run without --only takes, per mode (profile: one py-spy'd chatd step more).
DEFAULT_SECTIONS = {"quick": SECTIONS[:5], "full": SECTIONS}
# Reports and kicks timed by the moderation section, per mode.
MODERATION_SAMPLES = {"quick": (10, 3), "full": (50, 20)}
SYSTEMS = ("chatd", "websockets", "socketio-node", "python-socketio", "starlette")
# Seconds of the budget kept for the sections after the last search (the baselines' idle
# runs and storage), per mode; chatd's own idle run comes out of the searches' shares.
RESERVE_S = {"quick": 40.0, "full": 150.0}


def _selection(only: str | None) -> tuple[list[str], list[str]]:
    names = [n.strip() for n in (only or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS and n not in SYSTEMS]
    if unknown:
        raise SystemExit(f"unknown --only names: {', '.join(unknown)}")
    sections = [n for n in names if n in SECTIONS]
    systems = [n for n in names if n in SYSTEMS] or list(SYSTEMS)
    return sections, systems


def _share(deadline: float, searches_left: int, reserve: float) -> float:
    """A deadline for the next search: an equal share of what is left of the budget."""
    left = deadline - reserve - time.monotonic()
    return time.monotonic() + max(10.0, left / max(1, searches_left))


def _failed(results: dict[str, Any], section: str, key: str, exc: BaseException) -> None:
    """A section that failed is reported as such; the run goes on with the next one."""
    log(f"{section} of {key} failed: {exc}")
    results.setdefault("failures", []).append(f"{section} of {key}: {str(exc)[:500]}")


def _guarded(
    results: dict[str, Any],
    section: str,
    key: str,
    body: Callable[..., dict[str, Any]],
    *args: Any,
) -> None:
    try:
        results[section].append(body(*args))
    except Exception as exc:
        _failed(results, section, key, exc)


def run(mode: Mode, sections: list[str], systems: list[str]) -> dict[str, Any]:
    started = time.monotonic()
    deadline = started + mode.budget_s
    results: dict[str, Any] = {
        "mode": mode.name,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "load_start": loadavg(),
        "fanout": [],
        "dms": [],
        "idle": [],
        "storage": [],
        "moderation": [],
    }
    workdir = BENCH / "results" / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    searches_left = sum(k != "starlette" for k in systems) * ("fanout" in sections) + sum(
        k in mode.dm_systems for k in systems
    ) * ("dms" in sections)
    reserve = RESERVE_S[mode.name] if {"idle", "storage"} & set(sections) else 0.0
    # The DM pairs are made among the fan-out's accounts: registrations are argon2 hashes.
    accounts = accounts_for_rooms(mode.rooms)
    for key in systems:
        if not {"fanout", "dms", "idle", "moderation"} & set(sections):
            break
        if key == "starlette":  # an idle baseline only, below
            continue
        dep: Deployment = Chatd(workdir / key) if key == "chatd" else PEERS[key](workdir / key)
        try:
            log(f"starting {dep.name}")
            dep.start()
            if isinstance(dep, Chatd):
                t = time.monotonic()
                dep.register(accounts)
                log(f"registered {accounts} accounts in {time.monotonic() - t:.1f} s")
            profiled = key == "chatd" and "profile" in sections
            if "fanout" in sections:
                share = _share(deadline, searches_left, reserve)
                _guarded(results, "fanout", key, fanout, key, dep, mode, share, profiled)
                searches_left -= 1
            if "idle" in sections and key in mode.idle_systems:
                if isinstance(dep, Chatd):
                    fresh = dep.add_node(dep.nodes)  # a node that served nothing yet
                    url, pid = fresh.ws_url, fresh.pid
                else:
                    dep.stop()  # a fresh start: RSS of a process that served nothing yet
                    dep = PEERS[key](workdir / f"{key}-idle")
                    dep.start()
                    url = dep.urls[0]
                    pid = dep.groups["node1" if "node1" in dep.groups else "server"]()[0]
                _guarded(results, "idle", key, idle, key, dep, url, pid, mode)
                if isinstance(dep, Chatd):
                    dep.remove_node(fresh)
            # After idle, so that chatd's idle accounts are members of one room, not 21.
            if "dms" in sections and key in mode.dm_systems:
                share = _share(deadline, searches_left, reserve)
                _guarded(results, "dms", key, dms, key, dep, mode, accounts, share, profiled)
                searches_left -= 1
            if "moderation" in sections and isinstance(dep, Chatd):
                reports, kicks = MODERATION_SAMPLES[mode.name]
                _guarded(results, "moderation", key, moderation, dep, reports, kicks)
        except Exception as exc:
            _failed(results, "setup", key, exc)
        finally:
            dep.stop()
    if "idle" in sections and "starlette" in systems and "starlette" in mode.idle_systems:
        from systems import BareStarlette

        for impl in mode.bare_ws_impls:
            bare = BareStarlette(workdir / f"starlette-{impl}", impl)
            try:
                bare.start()
                pid = bare.groups["server"]()[0]
                _guarded(
                    results,
                    "idle",
                    impl,
                    idle,
                    f"starlette-{impl}",
                    bare,
                    bare.urls[0],
                    pid,
                    mode,
                )
            except Exception as exc:
                _failed(results, "setup", f"starlette-{impl}", exc)
            finally:
                bare.stop()
    if "storage" in sections:
        try:
            results["storage"] = storage(mode, workdir)
        except Exception as exc:
            _failed(results, "storage", "writer", exc)
    results["load_end"] = loadavg()
    results["elapsed_s"] = time.monotonic() - started
    results["workdir"] = str(workdir)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short windows, small populations")
    parser.add_argument("--only", help="comma-separated sections and/or systems")
    args = parser.parse_args()
    sections, systems = _selection(args.only)
    mode = QUICK if args.quick else FULL
    sections = sections or list(DEFAULT_SECTIONS[mode.name])
    if "profile" in sections and not {"fanout", "dms"} & set(sections):
        sections.append("fanout")
    raise_fd_limit()
    ensure_peers()
    results = run(mode, sections, systems)
    text = render(results)
    out_dir = BENCH / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out_dir / f"{stamp}-{mode.name}.md").write_text(text + "\n")
    (out_dir / f"{stamp}-{mode.name}.json").write_text(json.dumps(results, indent=1))
    (out_dir / "latest.md").write_text(text + "\n")
    print(text)
    log(f"written to {out_dir}/{stamp}-{mode.name}.md (and .json)")


if __name__ == "__main__":
    main()
