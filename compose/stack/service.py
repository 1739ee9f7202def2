"""What every local service has in common: a folder, a pid file, a log, ports, a health check.

Kafka, ClickHouse and Triton differ only in how they are configured, launched and probed; the
start/wait/stop/report logic lives here once so all three behave the same under ``driftline stack``.
"""

from __future__ import annotations

import abc
import os
import time
from dataclasses import dataclass
from pathlib import Path

from driftline.compose.stack import process
from driftline.compose.stack.process import StackError
from driftline.settings import Settings


@dataclass
class ServiceStatus:
    """A service's state as ``driftline stack status`` reports it."""

    name: str
    running: bool
    healthy: bool
    pid: int | None
    ports: dict[str, int]
    rss_bytes: int
    log_file: Path
    detail: str = ""


class Service(abc.ABC):
    """One local service managed through a pid file under ``<run_dir>/<name>/``."""

    name: str = ""
    #: seconds allowed between launch and a passing health check
    start_timeout_s: float = 90.0
    #: seconds between SIGTERM and SIGKILL on stop
    stop_grace_s: float = 20.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.run_dir / self.name
        self.pid_file = self.home / f"{self.name}.pid"
        self.log_dir = self.home / "logs"

    # --- per-service parts -------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def ports(self) -> dict[str, int]:
        """Named TCP ports this service listens on (all on 127.0.0.1)."""

    @property
    @abc.abstractmethod
    def log_file(self) -> Path:
        """The main log a person should read when the service misbehaves."""

    @property
    def stdout_file(self) -> Path:
        """Where the process's stdout/stderr go (start-up errors before its own log opens)."""
        return self.log_dir / "stdout.log"

    @abc.abstractmethod
    def check_requirements(self) -> None:
        """Raise StackError naming what is missing (binary, jars, ...)."""

    @abc.abstractmethod
    def prepare(self) -> None:
        """Write configuration and initialise storage under ``self.home`` (idempotent)."""

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the service in the foreground (its pid is recorded)."""

    def environment(self) -> dict[str, str]:
        """Environment of the launched process (default: this process's environment)."""
        return dict(os.environ)

    @abc.abstractmethod
    def probe(self) -> str | None:
        """One health check: None when healthy, else a short reason.

        Raise ``StackError`` instead when waiting cannot help (wrong credentials): start-up fails
        at once with that message rather than after the whole start timeout.
        """

    # --- shared behaviour --------------------------------------------------------------------
    @property
    def host(self) -> str:
        """The address every service binds to and is probed on (loopback only)."""
        return "127.0.0.1"

    def record(self) -> process.PidRecord | None:
        """The pid record of this service, or None if there is none."""
        return process.read_pid(self.pid_file)

    def running_process(self):
        """The live psutil process recorded in the pid file, or None."""
        record = self.record()
        return record.process() if record else None

    def launch(self) -> bool:
        """Start the service unless it already runs. Returns True if a new process was launched."""
        if self.running_process() is not None:
            return False
        self.check_requirements()
        for label, port in self.ports.items():
            if process.port_open(self.host, port):
                raise StackError(
                    f"{self.name}: port {port} ({label}) on {self.host} is already in use by "
                    f"{process.port_owner(port)}; stop it or choose another port via DRIFTLINE_* settings"
                )
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with open(self.stdout_file, "ab") as fh:
            fh.write(f"\n==== driftline stack: starting {self.name} at {time.ctime()} ====\n".encode())
        process.spawn(
            self.command(),
            log_file=self.stdout_file,
            env=self.environment(),
            cwd=self.home,
            pid_file=self.pid_file,
        )
        return True

    def wait_healthy(self, timeout_s: float | None = None) -> None:
        """Poll the health check until it passes; fail with the cause and the last log lines."""
        deadline = time.monotonic() + (timeout_s or self.start_timeout_s)
        reason = "not checked yet"
        while True:
            if self.running_process() is None:
                raise self.failure("process exited during start-up")
            reason = self.probe() or ""
            if not reason:
                return
            if time.monotonic() > deadline:
                raise self.failure(f"not healthy after {timeout_s or self.start_timeout_s:.0f}s ({reason})")
            time.sleep(0.5)

    def failure(self, cause: str) -> StackError:
        """A StackError with ``cause`` and the last lines of the service's logs."""
        logs = []
        for path in dict.fromkeys([self.log_file, self.stdout_file]):
            text = process.tail(path, 15)
            if text.strip():
                logs.append(f"--- last lines of {path} ---\n{text}")
        joined = "\n".join(logs) or f"(no log output in {self.log_dir})"
        return StackError(f"{self.name}: {cause}\n{joined}")

    def stop(self) -> bool:
        """Stop the process recorded in the pid file (only ours) and wait until its ports close."""
        record = self.record()
        was_running = False
        if record is not None:
            was_running = process.terminate(record, grace_s=self.stop_grace_s)
        self.pid_file.unlink(missing_ok=True)
        if was_running:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and any(
                process.port_open(self.host, port, timeout=0.2) for port in self.ports.values()
            ):
                time.sleep(0.2)
        return was_running

    def status(self) -> ServiceStatus:
        """Running, healthy, pid, ports and memory of the service (probes it if running)."""
        proc = self.running_process()
        healthy = False
        detail = "stopped"
        rss = 0
        if proc is not None:
            try:
                reason = self.probe()
            except StackError as exc:  # a probe may fail fast (e.g. rejected credentials)
                reason = str(exc)
            healthy = reason is None
            detail = "healthy" if healthy else f"unhealthy: {reason}"
            rss = process.rss_bytes(process.tree(proc))
        return ServiceStatus(
            name=self.name,
            running=proc is not None,
            healthy=healthy,
            pid=proc.pid if proc is not None else None,
            ports=self.ports,
            rss_bytes=rss,
            log_file=self.log_file,
            detail=detail,
        )
