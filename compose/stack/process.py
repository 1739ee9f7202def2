"""Start, find and stop the stack's own processes.

Every service the stack starts is recorded in a pid file holding the pid *and* the process start
time, so ``down`` can never signal an unrelated process that happened to reuse the pid, and so a
second ``up`` recognises a service that is already running instead of starting a twin.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil


class StackError(RuntimeError):
    """A service could not be started, checked or stopped; the message names the service and cause."""


@dataclass(frozen=True)
class PidRecord:
    """A pid plus the process start time, so a reused pid is never mistaken for ours."""

    pid: int
    create_time: float

    def process(self) -> psutil.Process | None:
        """The live process this record describes, or None if it is gone (or the pid was reused)."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 1.0:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                _reap(self.pid)
                return None
            return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None


def _reap(pid: int) -> None:
    """Collect a zombie child of this process (tests start services from the pytest process)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def read_pid(pid_file: Path) -> PidRecord | None:
    """The record in ``pid_file``, or None if the file is missing or unreadable."""
    try:
        data = json.loads(pid_file.read_text())
        return PidRecord(pid=int(data["pid"]), create_time=float(data["create_time"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_pid(pid_file: Path, pid: int) -> PidRecord:
    """Record the live process ``pid`` (with its start time) in ``pid_file``."""
    record = PidRecord(pid=pid, create_time=psutil.Process(pid).create_time())
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(json.dumps({"pid": record.pid, "create_time": record.create_time}))
    return record


def spawn(
    cmd: Sequence[str], *, log_file: Path, env: Mapping[str, str], cwd: Path, pid_file: Path
) -> PidRecord:
    """Start ``cmd`` detached (own session, so it outlives the CLI and ignores its terminal's signals)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=str(cwd),
            start_new_session=True,
            close_fds=True,
        )
    return write_pid(pid_file, proc.pid)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_owner(port: int) -> str:
    """Best-effort description of the process listening on ``port`` (for 'port in use' errors)."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                if conn.pid:
                    with contextlib.suppress(psutil.Error):
                        proc = psutil.Process(conn.pid)
                        return f"pid {conn.pid} ({proc.name()})"
                return "another process"
    except (psutil.Error, OSError):
        pass
    return "another process"


def tree(proc: psutil.Process) -> list[psutil.Process]:
    """The process and all its descendants (Triton's python-backend stubs are children)."""
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return [proc]


def rss_bytes(procs: Iterable[psutil.Process]) -> int:
    """Total resident memory of ``procs`` in bytes (processes that vanished count 0)."""
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def _alive(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
            else:
                _reap(proc.pid)
        except psutil.Error:
            continue
    return alive


def terminate(record: PidRecord, *, grace_s: float) -> bool:
    """SIGTERM the process, wait ``grace_s``, then SIGKILL it and every child it had, by pid.

    Children are listed *before* signalling because once the parent exits they are re-parented and
    could no longer be found from it (tritonserver's python stubs outlive a slow shutdown).
    Returns True if the process was running.
    """
    proc = record.process()
    if proc is None:
        return False
    members = tree(proc)
    with contextlib.suppress(psutil.Error):
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _alive([proc]):
            break
        time.sleep(0.2)
    for member in _alive(members):
        with contextlib.suppress(psutil.Error):
            member.kill()
    deadline = time.monotonic() + 10
    while _alive(members) and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])
