"""Helpers for the reliability tests and benchmark (not a test module): private stacks and workers.

Every reliability test that breaks things runs its OWN stack on free ports with a temporary run dir,
so the shared stack on the default ports is never touched. Nothing here mutates ``os.environ``: the
settings of a private stack are built from an explicit environment dict, which is also the
environment of the worker subprocesses, so in-process clients and workers agree on ports and
credentials while other tests in the same pytest session keep seeing the shared stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftline.apps.testing.harness import free_ports, query, settings_for, stored_copies, worker_env  # noqa: F401  (re-exported)
from driftline.apps.testing.harness import wait_for as pipeline_wait_for
from driftline.clients import kafka_client_kwargs
from driftline.compose.stack.manager import Stack
from driftline.settings import REPO_ROOT, Settings, Topics

#: password of the ClickHouse user of the private pipeline stack (conftest); tests grep logs for it
PIPELINE_CH_PASSWORD = "rel-pw-5e1f0c2b"

PORT_VARS = (
    "KAFKA__PORT", "KAFKA__CONTROLLER_PORT", "CLICKHOUSE__PORT", "CLICKHOUSE__HTTP_PORT",
    "TRITON__HTTP_PORT", "TRITON__GRPC_PORT", "TRITON__METRICS_PORT",
)  # fmt: skip


def private_env(
    run_dir: Path,
    *,
    clickhouse_user: str | None = None,
    clickhouse_password: str | None = None,
    sasl: tuple[str, str] | None = None,
    repository: Path | None = None,
) -> dict[str, str]:
    """The environment of a private stack: free ports, its own run dir, optional credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    for keep in ("DRIFTLINE_CACHE",):
        if keep in os.environ:
            env[keep] = os.environ[keep]
    for name, port in zip(PORT_VARS, free_ports(len(PORT_VARS)), strict=True):
        env[f"DRIFTLINE_{name}"] = str(port)
    env["DRIFTLINE_RUN_DIR"] = str(run_dir)
    env["DRIFTLINE_TRITON__EXIT_TIMEOUT_S"] = "5"
    if clickhouse_user:
        env["DRIFTLINE_CLICKHOUSE__USER"] = clickhouse_user
    if clickhouse_password:
        env["DRIFTLINE_CLICKHOUSE__PASSWORD"] = clickhouse_password
    if sasl:
        env["DRIFTLINE_KAFKA__SECURITY_PROTOCOL"] = "SASL_PLAINTEXT"
        env["DRIFTLINE_KAFKA__SASL_USERNAME"], env["DRIFTLINE_KAFKA__SASL_PASSWORD"] = sasl
    if repository:
        env["DRIFTLINE_TRITON__REPOSITORY"] = str(repository)
    return env


@contextlib.contextmanager
def private_stack(env: dict[str, str], only: list[str] | None = None) -> Iterator[Stack]:
    """``stack up`` on the private ports; always ``down`` afterwards (only this run dir's pids)."""
    stack = Stack(settings_for(env), only=only)
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


def run_coro(coro: Any, timeout: float = 120.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def produce(
    settings: Settings, topic: str, messages: list[tuple[bytes | None, bytes | None]]
) -> list[tuple[str, int, int]]:
    """Send (key, value) pairs in order; returns where each landed as (topic, partition, offset)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        **kafka_client_kwargs(settings, max_request_size=32 << 20, linger_ms=5, acks="all")
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for key, value in messages]
        return [(m.topic, m.partition, m.offset) for m in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


async def create_topics(settings: Settings, names: list[str], partitions: int = 4) -> None:
    """Topics that accept 32 MB messages (oversized input must reach the worker to be dead-lettered)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings, request_timeout_ms=15000))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        await admin.create_topics(
            [NewTopic(n, partitions, 1, topic_configs={"max.message.bytes": str(32 << 20)})
             for n in names if n not in existing]
        )  # fmt: skip
    finally:
        await admin.close()


def wait_for(predicate, timeout: float, interval: float = 1.0):
    """``harness.wait_for`` for broken stacks: a predicate that raises means "not yet"."""
    return pipeline_wait_for(predicate, timeout, interval, ignore_errors=True)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read() or b""
    except OSError:
        return 0, b""


@dataclass
class Worker:
    proc: subprocess.Popen
    port: int
    log: Path


@dataclass
class PipelineWorkers:
    """``driftline worker`` subprocesses of one pipeline (own topics, app id) on a private stack."""

    env: dict[str, str]
    routes: dict[str, str]  # {"news": "news_topic@model", "chat": ...}
    log_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    workers: list[Worker] = field(default_factory=list)
    restarts: int = 0

    @property
    def topics(self) -> Topics:
        return Topics(**{name: f"rel.{self.suffix}.{name}" for name in Topics.model_fields})

    def worker_env(self) -> dict[str, str]:
        return worker_env(self.env, self.topics, f"rel-{self.suffix}", self.routes, self.extra_env)

    @property
    def settings(self) -> Settings:
        return settings_for(self.worker_env())

    def start(self) -> Worker:
        port = free_ports(1)[0]
        log = self.log_dir / f"worker-{self.suffix}-{port}.log"
        cmd = [sys.executable, "-m", "driftline.apps.cli", "worker",
               "--web-port", str(port), "--client", "triton"]  # fmt: skip
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=self.worker_env(), stdout=log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        worker = Worker(proc, port, log)
        self.workers.append(worker)
        return worker

    def health(self, worker: Worker) -> tuple[int, dict[str, Any]]:
        status, body = http_get(f"http://127.0.0.1:{worker.port}/health")
        try:
            return status, json.loads(body or b"{}")
        except ValueError:
            return status, {}

    def metrics(self, worker: Worker) -> dict[str, float]:
        """Prometheus samples summed over labels, by metric name."""
        status, body = http_get(f"http://127.0.0.1:{worker.port}/metrics")
        totals: dict[str, float] = {}
        if status != 200:
            return totals
        for line in body.decode().splitlines():
            if not line or line.startswith("#"):
                continue
            name = line.split("{", 1)[0].split(" ", 1)[0]
            with contextlib.suppress(ValueError):
                totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        return totals

    def wait_healthy(self, worker: Worker, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if worker.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {worker.proc.returncode}:\n{tail(worker.log)}")
            status, report = self.health(worker)
            if status == 200:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker :{worker.port} not healthy: {report}\n{tail(worker.log)}")
            time.sleep(1)

    def kill(self, worker: Worker, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.proc.pid, sig)
        worker.proc.wait(timeout=60)

    def stop(self) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(w.proc.pid, signal.SIGTERM)
        for w in self.workers:
            try:
                w.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(w.proc.pid, signal.SIGKILL)
                w.proc.wait()


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def log_files(*roots: Path) -> list[Path]:
    """Every regular file under ``roots`` that a person would read as a log or captured output."""
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and (path.suffix in (".log", ".out", ".txt") or "log" in path.name):
                found.append(path)
    return found


def files_containing(secret: str, paths: list[Path]) -> list[Path]:
    needle = secret.encode()
    hits = []
    for path in paths:
        with contextlib.suppress(OSError):
            if needle in path.read_bytes():
                hits.append(path)
    return hits
