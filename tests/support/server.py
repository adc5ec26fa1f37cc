"""A chatd node as a child process: started, health-checked, signalled, restarted."""

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from .ports import LOOPBACK, free_port
from .procs import log_tail, reap, send_signal, spawn, stop_process

START_TIMEOUT = 20.0
"""Seconds for a node to answer its health check after it was started."""

SERVER_START_TIMEOUT = START_TIMEOUT
"""Seconds a node made by the `start_server` fixture gets to answer /healthz."""

STOP_TIMEOUT = 15.0
"""Seconds a node gets to exit after SIGTERM (the contract says 10) before SIGKILL."""

HEALTH_TIMEOUT = 1.0
"""Seconds for one health-check request."""

REPO_ROOT = Path(__file__).resolve().parents[2]


def hermetic_environ() -> dict[str, str]:
    """os.environ without the CHATD_* settings of the developer's shell.

    A node's configuration is what its test says, nothing inherited (CHATD_TEST_* stays:
    it steers the harness, not the server).
    """
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CHATD_") or key.startswith("CHATD_TEST_")
    }


def setting_env(key: str, value: object) -> tuple[str, str]:
    """A setting as its variable: limits_send_rate=5 -> ("CHATD_LIMITS_SEND_RATE", "5").

    Booleans are written true/false and lists as JSON arrays, as PROTOCOL.md section 7
    says; a key given as CHATD_... is taken as it is.
    """
    name = key if key.startswith("CHATD_") else f"CHATD_{key.upper()}"
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list | tuple | dict):
        text = json.dumps(value)
    else:
        text = str(value)
    return name, text


class ServerProcess:
    """One `python -m chatd serve` on 127.0.0.1:`port`, its output in `log_path`.

    `env` holds the CHATD_* settings on top of the (hermetic) environment. The port is
    picked once and kept, so `restart()` brings the node back where clients expect it.
    """

    health_path = "/healthz"

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        port: int | None = None,
        cwd: Path,
        log_path: Path,
        config_file: Path | None = None,
    ) -> None:
        self.env = dict(env)
        self.port = port if port is not None else free_port()
        self.cwd = cwd
        self.log_path = log_path
        self.config_file = config_file
        self._proc: Any = None  # subprocess.Popen once started
        self.returncode: int | None = None

    # -- what runs -----------------------------------------------------------------------

    def command(self) -> list[str]:
        """The argv of the node; a subclass may run something else with a health check."""
        argv = [sys.executable, "-m", "chatd", "serve"]
        if self.config_file is not None:
            argv += ["--config", str(self.config_file)]
        return [*argv, "--host", LOOPBACK, "--port", str(self.port)]

    def environment(self) -> dict[str, str]:
        env = hermetic_environ()
        # The package is importable from the work tree even before `pip install -e .`.
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if part
        )
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env)
        return env

    # -- addresses -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}/ws"

    @property
    def pid(self) -> int:
        assert self._proc is not None, "the server was never started"
        pid: int = self._proc.pid
        return pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- life cycle ----------------------------------------------------------------------

    def healthy(self) -> bool:
        """Whether GET health_path answers 200 now."""
        try:
            with urllib.request.urlopen(
                self.base_url + self.health_path, timeout=HEALTH_TIMEOUT
            ) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def log_tail(self) -> str:
        return log_tail(self.log_path)

    def start(self, timeout: float = START_TIMEOUT) -> "ServerProcess":
        """Start the node and wait until it is healthy (`timeout` in seconds).

        Raises RuntimeError with the end of the log when it exits first or never answers.
        """
        if self.running:
            raise RuntimeError(f"server on port {self.port} is running already")
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.returncode = None
        self._proc = spawn(
            self.command(), log_path=self.log_path, env=self.environment(), cwd=self.cwd
        )
        deadline = time.monotonic() + timeout
        while not self.healthy():
            code = self._proc.poll()
            if code is not None:
                self.returncode = code
                raise RuntimeError(
                    f"server exited with code {code} before {self.health_path} answered; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if time.monotonic() >= deadline:
                self.stop()
                raise RuntimeError(
                    f"server did not answer {self.health_path} on port {self.port} within "
                    f"{timeout}s; log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.02)
        return self

    def terminate(self) -> None:
        """SIGTERM: the node drains (close 1012) and exits by itself."""
        send_signal(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL, as a crash; call wait() to reap it."""
        send_signal(self.pid, signal.SIGKILL)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Reap the node and return its exit code; AssertionError if still running."""
        assert self._proc is not None, "the server was never started"
        code = reap(self._proc, timeout)
        if code is None:
            raise AssertionError(f"server pid {self.pid} still runs after {timeout}s")
        self.returncode = code
        return code

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, SIGKILL after `timeout` seconds; always reaps. None if never started."""
        if self._proc is None:
            return None
        self.returncode = stop_process(self._proc, signal.SIGTERM, timeout)
        return self.returncode

    def restart(self, timeout: float = START_TIMEOUT) -> "ServerProcess":
        """Stop, then start again with the same port and environment."""
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Stop the node if it runs, and reap it (fixture teardown)."""
        self.stop()


class StartServer(Protocol):
    """The `start_server` fixture: a factory of started nodes (see tests/conftest.py)."""

    def __call__(
        self,
        db_url: str | None = None,
        broker_url: str = "memory://",
        *,
        port: int | None = None,
        config_file: Path | None = None,
        timeout: float = SERVER_START_TIMEOUT,
        start: bool = True,
        **env_overrides: object,
    ) -> ServerProcess: ...
