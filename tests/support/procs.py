"""Child processes of the tests: spawned with a log file, signalled and reaped by pid.

Every service a test starts (PostgreSQL, Redis, chatd nodes) is a direct child of the
test process, so its pid is known, it can be signalled on its own and always reaped.
Nothing here ever signals a process by name.
"""

import ctypes
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

STOP_TIMEOUT = 15.0
"""Seconds a process gets to exit after a polite signal before it is SIGKILLed."""

KILL_TIMEOUT = 10.0
"""Seconds to wait for a SIGKILLed process to be gone."""

LOG_TAIL_LINES = 60
"""Lines of a log quoted in error messages."""

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _death_signal_setter(sig: int) -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to send `sig` to the child when we die.

    So a test run that is killed outright leaves no service behind. The kernel ties this
    to the thread that forked, so it is only set up from the main thread (a worker
    thread that ends would take the service with it).
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not (
        threading.main_thread()
    ):
        return None
    parent = os.getpid()

    def set_death_signal() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return set_death_signal


def _as_user(user: str | None) -> dict[str, object]:
    """Popen arguments that run the child as `user`, with no supplementary groups."""
    if user is None:
        return {}
    uid, gid = account_ids(user)
    return {"user": uid, "group": gid, "extra_groups": []}


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
    death_signal: int | None = signal.SIGKILL,
) -> "subprocess.Popen[bytes]":
    """Start `argv` in a session of its own, stdout and stderr appended to `log_path`.

    `user`: run as that account (only when we are root; for PostgreSQL, which refuses to
    run as root). `death_signal`: what the child gets if the test process dies first.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        stamp = time.strftime("%H:%M:%S")
        log.write(f"\n===== {stamp} start: {' '.join(argv)}\n".encode())
        log.flush()
        extra = _as_user(user)
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_death_signal_setter(death_signal) if death_signal else None,
            **extra,  # type: ignore[call-overload]
        )


def run_as(
    argv: Sequence[str],
    *,
    user: str | None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120.0,
) -> "subprocess.CompletedProcess[str]":
    """Run a short command to completion (as `user` when given), capturing its output.

    Raises RuntimeError with the output when it fails. `timeout` is in seconds.
    """
    extra = _as_user(user)
    result = subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        timeout=timeout,
        check=False,
        **extra,  # type: ignore[call-overload]
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


def account_ids(user: str) -> tuple[int, int]:
    """The uid and primary gid of an account."""
    account = pwd.getpwnam(user)
    return account.pw_uid, account.pw_gid


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name, or None if there is none."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may itself hold spaces and parentheses.
    return raw[raw.rindex(")") + 2 :].split()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs (a zombie counts as gone)."""
    fields = _stat_fields(pid)
    if fields is not None:
        return fields[0] not in ("Z", "X")
    if Path("/proc/self/stat").exists():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def children_of(pid: int) -> list[int]:
    """The pids of the live direct children of a process (Linux /proc only)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and fields[1] == str(pid) and fields[0] not in ("Z", "X"):
            children.append(int(entry.name))
    return children


def send_signal(pid: int, sig: int) -> None:
    """Signal one process by pid; one that is already gone is not an error."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_gone(pids: Sequence[int], timeout: float) -> None:
    """Wait until none of `pids` runs; raise AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while any(pid_alive(pid) for pid in pids):
        if time.monotonic() >= deadline:
            alive = [pid for pid in pids if pid_alive(pid)]
            raise AssertionError(f"processes {alive} still run {timeout}s after SIGKILL")
        time.sleep(0.02)


def reap(proc: "subprocess.Popen[bytes]", timeout: float) -> int | None:
    """The return code once the child has exited within `timeout` seconds, else None."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def stop_process(
    proc: "subprocess.Popen[bytes]",
    sig: int = signal.SIGTERM,
    timeout: float = STOP_TIMEOUT,
) -> int:
    """Send `sig`, wait up to `timeout` seconds, then SIGKILL; always reaps the child."""
    if proc.poll() is None:
        send_signal(proc.pid, sig)
        code = reap(proc, timeout)
        if code is not None:
            return code
        send_signal(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=KILL_TIMEOUT)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])
