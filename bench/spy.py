"""Where a chatd node's time goes under the fan-out load: py-spy on node 1, summarised."""

from __future__ import annotations

import collections
import signal
import subprocess
from pathlib import Path
from typing import Any

from harness import GEN_CORE, PEERS_VENV, log

# Samples per second py-spy takes.
PY_SPY_RATE = 250
# A leaf frame that means the event loop was waiting for work: py-spy does not always see
# a thread in epoll_wait as idle, so these samples are dropped (and counted apart).
IDLE_LEAVES = ("EpollSelector.select",)
# Seconds py-spy gets to write its output after SIGINT.
STOP_TIMEOUT_S = 30.0
# Inclusive buckets: a sample counts in the first whose pattern is in any of its frames,
# tried leaf first, so that e.g. JSON encoding inside the hub counts as encoding.
CATEGORIES = (
    ("JSON encode/decode", ("json/encoder", "json/decoder", "json/__init__")),
    ("msgpack encode/decode", ("msgpack",)),
    ("socket writes (send syscalls, loopback TCP)", ("_SelectorSocketTransport.write",)),
    ("socket reads", ("_read_ready",)),
    ("database (SQLAlchemy, asyncpg)", ("sqlalchemy/", "asyncpg/")),
    ("Redis client", ("redis/",)),
    ("WebSocket framing (websockets, uvicorn)", ("websockets/", "uvicorn/protocols")),
    ("Starlette / ASGI", ("starlette/",)),
    ("protocol/ (frames, codecs, checks)", ("protocol/",)),
    ("chatd/ and persistence/ own code", ("chatd/", "persistence/")),
    ("asyncio event loop", ("asyncio/",)),
)


def record(pid: int, seconds: float, out: Path, gil: bool) -> subprocess.Popen[bytes]:
    """Starts py-spy on the generator's core (so it takes nothing from the server core).

    Without `gil` a sample is taken of every thread not idle in a wait: that includes a
    thread inside a send syscall, and one preempted while runnable (on a shared core, the
    woken receiver of a loopback send often preempts the sender), so it is wall time. With
    `gil`, only the thread holding the GIL: Python's own CPU, without syscalls.
    """
    py_spy = PEERS_VENV / "bin" / "py-spy"
    return subprocess.Popen(
        [
            "taskset",
            "-c",
            str(GEN_CORE),
            str(py_spy),
            "record",
            "--nonblocking",
            *(["--gil"] if gil else []),
            "-r",
            str(PY_SPY_RATE),
            "-d",
            str(int(seconds)),
            "-f",
            "raw",
            "-o",
            str(out),
            "-p",
            str(pid),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def finish(sampler: subprocess.Popen[bytes]) -> None:
    """Stops py-spy if it still samples (SIGINT: it writes what it has), and reaps it."""
    if sampler.poll() is None:
        sampler.send_signal(signal.SIGINT)
    try:
        sampler.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        sampler.kill()
        sampler.wait()


def summarise(path: Path, top: int = 15) -> dict[str, Any]:
    """Categories (leaf-first attribution), self time by function, inclusive by chatd
    function; each as % of the samples in which the node was running Python."""
    total = 0
    idle = 0
    cats: collections.Counter[str] = collections.Counter()
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if frames[-1].startswith(IDLE_LEAVES):
            idle += n
            continue
        total += n
        self_t[frames[-1]] += n
        for frame in set(frames):
            if "chatd/" in frame or "persistence/" in frame or "protocol/" in frame:
                incl[frame] += n
        for frame in reversed(frames):
            hit = next((name for name, pats in CATEGORIES if any(p in frame for p in pats)), None)
            if hit is not None:
                cats[hit] += n
                break
        else:
            cats["other"] += n

    def pct(counter: collections.Counter[str], k: int) -> list[tuple[str, float]]:
        return [(name, round(100.0 * n / max(1, total), 1)) for name, n in counter.most_common(k)]

    return {
        "samples": total,
        "idle_samples": idle,
        "categories": pct(cats, len(CATEGORIES) + 1),
        "self": pct(self_t, top),
        "inclusive_chatd": pct(incl, top),
    }


def render(prof: dict[str, Any]) -> list[str]:
    mode = (
        "`--gil`: only samples holding the GIL, i.e. Python's own CPU"
        if prof.get("gil")
        else "all non-idle samples: wall time, syscalls and preemption included"
    )
    lines = [
        f"### Where chatd's time goes (py-spy on node 1, {mode})",
        "",
        f"{prof['samples']} samples at {PY_SPY_RATE} Hz during one "
        f"{prof.get('workload', 'fan-out')} step at "
        f"{prof['rate']} msg/s ({prof.get('delivered_per_s', 0):,.0f} deliveries/s, node 1 "
        f"at {prof.get('node_cpu')}% CPU; {prof.get('idle_samples', 0)} samples waiting in "
        "epoll left out). Each sample counts once, in the innermost category on its stack.",
        "",
        "| category | % of samples |",
        "| --- | --- |",
    ]
    lines += [f"| {name} | {p} |" for name, p in prof["categories"]]
    lines += ["", "| self time, by function | % |", "| --- | --- |"]
    lines += [f"| `{name}` | {p} |" for name, p in prof["self"]]
    lines += ["", "| inclusive, chatd's functions | % |", "| --- | --- |"]
    lines += [f"| `{name}` | {p} |" for name, p in prof["inclusive_chatd"]]
    log(f"  profile: {prof['categories'][:4]}")
    return [*lines, ""]
