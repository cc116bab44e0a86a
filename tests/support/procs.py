"""Real processes for end-to-end tests: start, wait until ready, signal, restart, read logs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from tests.support.env import ROOT


class ProcessFailed(RuntimeError):
    pass


class ManagedProcess:
    """One child process in its own session, logging to ``log_path``.

    ``ready_url`` is polled until it answers 200; ``ready_log`` waits for a line in the log;
    ``ready_check`` is any callable that returns True once the process is ready.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        log_path: Path,
        ready_url: str | None = None,
        ready_log: str | None = None,
        ready_check: Callable[[], bool] | None = None,
        ready_timeout: float = 30.0,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.log_path = log_path
        self.ready_url = ready_url
        self.ready_log = ready_log
        self.ready_check = ready_check
        self.ready_timeout = ready_timeout
        self.cwd = cwd
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, wait: bool = True) -> ManagedProcess:
        # A fresh log per test run; a restart within the test appends to it.
        log = open(self.log_path, "ab" if self.process is not None else "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise ProcessFailed(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
            if self._ready():
                return
            time.sleep(0.1)
        raise ProcessFailed(f"{self.name} not ready after {self.ready_timeout} s:\n{self.tail()}")

    def _ready(self) -> bool:
        if self.ready_check:
            return self.ready_check()
        if self.ready_url:
            try:
                return httpx.get(self.ready_url, timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False
        if self.ready_log:
            return self.ready_log in self.log_text()
        return True

    def signal(self, sig: int) -> None:
        if self.alive:
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group (a forking worker's children too)."""
        if self.alive:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait (warm shutdown); SIGKILL if it does not exit in ``timeout`` s."""
        if not self.alive:
            return self.process.returncode if self.process else None
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def python(*args: str) -> list[str]:
    """argv running this interpreter (the project's venv) with ``args``."""
    return [sys.executable, *args]
