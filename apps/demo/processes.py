"""The demo's own processes (workers, updater, explainer, dashboard): started with logs in the run folder.

Real ``driftline`` subprocesses, each in its own session; only processes started here are signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    """True if something accepts connections on host:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@dataclass
class Managed:
    """One started ``driftline`` subprocess with its command line and log file."""

    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        """The subprocess's pid (also its process-group id: it runs in its own session)."""
        return self.process.pid

    def alive(self) -> bool:
        """True while the subprocess has not exited."""
        return self.process.poll() is None

    def tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of its log ('' if unreadable)."""
        try:
            return "\n".join(self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class ProcessGroup:
    """Subprocesses of one demo run; ``stop_all`` ends them (TERM, then KILL after a grace period)."""

    log_dir: Path
    env: dict[str, str]
    processes: list[Managed] = field(default_factory=list)

    def start(self, name: str, *args: str, detach: bool = False) -> Managed:
        """``driftline <args>`` with stdout+stderr in ``<log_dir>/<name>.log``.

        ``detach`` processes (the dashboard) are not stopped by ``stop_all``: they outlive the demo.
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        argv = [sys.executable, "-m", "driftline.apps.cli", *args]
        with log.open("ab") as handle:
            process = subprocess.Popen(
                argv,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )
        managed = Managed(name, argv, log, process)
        if not detach:
            self.processes.append(managed)
        return managed

    def run(self, name: str, *args: str, timeout_s: float) -> int | None:
        """``driftline <args>`` to its end, logged like ``start``; its exit code (None: timed out, killed)."""
        managed = self.start(name, *args)
        self.processes.remove(managed)
        try:
            return managed.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            managed.process.kill()
            managed.process.wait()
            return None

    def dead(self) -> list[Managed]:
        """The started (non-detached) processes that have exited."""
        return [p for p in self.processes if not p.alive()]

    def stop_all(self, grace_s: float = 20.0) -> dict[str, int | None]:
        """SIGTERM every process group we started, wait, SIGKILL what is left; returns exit codes."""
        for managed in self.processes:
            if managed.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(managed.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for managed in self.processes:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                managed.process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(managed.pid, signal.SIGKILL)
                managed.process.wait(timeout=10)
        return {m.name: m.process.returncode for m in self.processes}
