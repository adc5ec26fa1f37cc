"""Plumbing of the benchmark: paths, the peers' install, pinning, CPU and RSS from /proc."""

from __future__ import annotations

import hashlib
import os
import platform
import queue
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
for _path in (REPO / "tests", REPO):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from support.ports import LOOPBACK, free_port, port_accepts  # noqa: E402
from support.procs import _death_signal_setter, children_of, spawn, stop_process  # noqa: E402

__all__ = ["LOOPBACK", "free_port", "port_accepts", "spawn", "stop_process"]

# The server side (nodes, Redis, PostgreSQL) runs on this core, the generator on the other.
SERVER_CORE = 0
GEN_CORE = 1
# File descriptors each process may hold: 20,000 idle connections need as many on each side.
# Raising the hard limit needs CAP_SYS_RESOURCE; without it the soft one goes up to it.
FD_LIMIT = 65536
# Seconds a peer server gets to listen after it was started.
START_TIMEOUT_S = 30.0
# Seconds npm ci or pip install may take.
INSTALL_TIMEOUT_S = 600.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PEERS_VENV = BENCH / ".peers-venv"
PEERS_PYTHON = PEERS_VENV / "bin" / "python"
NODE_MODULES = BENCH / "node_modules"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- installs ---------------------------------------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ensure_peers() -> None:
    """npm ci of bench/package-lock.json, and the peers venv from peers-requirements.txt.

    Each is redone only when its lock changed since the last install (a stamp file says).
    """
    lock = BENCH / "package-lock.json"
    stamp = NODE_MODULES / ".bench-stamp"
    if not stamp.exists() or stamp.read_text() != _digest(lock):
        log("installing the Node packages (npm ci)")
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=BENCH,
            check=True,
            timeout=INSTALL_TIMEOUT_S,
            stdout=subprocess.DEVNULL,
        )
        stamp.write_text(_digest(lock))
    reqs = BENCH / "peers-requirements.txt"
    vstamp = PEERS_VENV / ".bench-stamp"
    if not vstamp.exists() or vstamp.read_text() != _digest(reqs):
        log("installing the Python peers into bench/.peers-venv")
        if not PEERS_PYTHON.exists():
            base = getattr(sys, "_base_executable", sys.executable)
            subprocess.run([base, "-m", "venv", str(PEERS_VENV)], check=True)
        subprocess.run(
            [str(PEERS_PYTHON), "-m", "pip", "install", "-q", "-r", str(reqs)],
            check=True,
            timeout=INSTALL_TIMEOUT_S,
        )
        vstamp.write_text(_digest(reqs))


def fd_hard_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def raise_fd_limit() -> None:
    """Children inherit it: the nodes and the generator hold a descriptor per connection."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, max(hard, FD_LIMIT)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- /proc -------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process (all its threads), in clock ticks."""
    fields = _stat(pid)
    if fields is None:
        return None
    return int(fields[11]) + int(fields[12])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def tree(pid: int) -> list[int]:
    """A process and its direct children (PostgreSQL: the postmaster and its backends)."""
    return [pid, *children_of(pid)]


PidSource = Callable[[], Sequence[int]]


class CpuWatch:
    """CPU% of groups of processes between start() and stop(), from /proc/<pid>/stat."""

    def __init__(self, groups: dict[str, PidSource]) -> None:
        self.groups = groups
        self._start: dict[str, dict[int, int]] = {}
        self._t0 = 0.0
        self.result: dict[str, float] = {}

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._start = {
            name: {pid: t for pid in pids() if (t := cpu_ticks(pid)) is not None}
            for name, pids in self.groups.items()
        }

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self._t0
        for name, pids in self.groups.items():
            before = self._start.get(name, {})
            used = 0
            for pid in pids():
                now = cpu_ticks(pid)
                if now is not None:
                    used += now - before.get(pid, 0 if before else now)
            self.result[name] = round(100.0 * used / CLK_TCK / max(elapsed, 1e-9), 1)
        return self.result


def pin(pids: Sequence[int], core: int) -> None:
    """taskset every thread of each process to one core (later forks inherit it)."""
    for pid in pids:
        subprocess.run(
            ["taskset", "-a", "-p", "-c", str(core), str(pid)],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def machine() -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": subprocess.run(
            ["node", "--version"], capture_output=True, text=True
        ).stdout.strip(),
    }


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


# -- child processes ---------------------------------------------------------------------------


class Proc:
    """A server of ours as a child process, listening on `port` once started."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        port: int,
        log_path: Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.port = port
        self.log_path = log_path
        self.cwd = cwd
        self.env = env
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self) -> Proc:
        full_env = dict(os.environ)
        full_env.update(self.env or {})
        self._proc = spawn(self.argv, log_path=self.log_path, env=full_env, cwd=self.cwd)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not port_accepts(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.argv[0]} did not listen on {self.port}:\n{tail}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None


class Generator:
    """bench/gen/loadgen.js on the generator's core: JSON commands in, JSON events out."""

    def __init__(self, config: dict[str, Any], workdir: Path, name: str) -> None:
        import json

        self._json = json
        self.name = name
        workdir.mkdir(parents=True, exist_ok=True)
        cfg_path = workdir / f"{name}.gen.json"
        cfg_path.write_text(json.dumps(config))
        self._log: IO[bytes] = open(workdir / f"{name}.gen.log", "ab")
        self._proc = subprocess.Popen(
            [
                "taskset",
                "-c",
                str(GEN_CORE),
                "node",
                str(BENCH / "gen" / "loadgen.js"),
                str(cfg_path),
            ],
            cwd=BENCH,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            preexec_fn=_death_signal_setter(9),
        )
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.strip()
            if line:
                self._events.put(self._json.loads(line))
        self._events.put(None)

    def event(self, timeout: float) -> dict[str, Any]:
        try:
            ev = self._events.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"the generator said nothing for {timeout:.0f} s") from None
        if ev is None:
            raise RuntimeError("the generator exited (see its .gen.log)")
        if ev.get("ev") == "fatal":
            raise RuntimeError(f"the generator failed: {ev.get('error')}")
        return ev

    def command(self, cmd: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(self._json.dumps(cmd) + "\n")
        self._proc.stdin.flush()

    def wait_for(self, kind: str, timeout: float) -> dict[str, Any]:
        while True:
            ev = self.event(timeout)
            if ev.get("ev") == kind:
                return ev

    def step(
        self,
        cmd: dict[str, Any],
        on_start: Callable[[], object],
        on_end: Callable[[], object],
        timeout: float,
    ) -> dict[str, Any]:
        self.command({"cmd": "step", **cmd})
        self.wait_for("window_start", timeout)
        on_start()
        self.wait_for("window_end", timeout)
        on_end()
        return self.wait_for("result", timeout)

    def close(self) -> None:
        try:
            self.command({"cmd": "quit"})
            self._proc.wait(timeout=10)
        except Exception:
            self._proc.kill()
            self._proc.wait()
        self._log.close()
