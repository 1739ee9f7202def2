"""The pipeline harness: real worker processes on private topics, for the stack tests and the benchmark.

``pipeline_artifact``, ``served_model``, ``PipelineRun``, ``settings_for``, ``query`` and ``stored_copies``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from driftline.clients import clickhouse_client, kafka_client_kwargs, kafka_producer
from driftline.models.artifacts import META_FILE, read_meta
from driftline.settings import REPO_ROOT, Settings, Topics, get_settings


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now (all bound at once, then released)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def settings_for(env: Mapping[str, str]) -> Settings:
    """``Settings()`` evaluated against ``env`` without touching the process environment."""
    with mock.patch.dict(os.environ, env, clear=True):
        return Settings()


def query(settings: Settings, sql: str, params: Any = None) -> list[tuple]:
    """Run one ClickHouse query with ``settings``' credentials on a fresh connection."""
    client = clickhouse_client(settings, connect_timeout=3, send_receive_timeout=60)
    try:
        return client.execute(sql, params)
    finally:
        client.disconnect()


def stored_copies(settings: Settings, where: str, params: Any) -> dict[str, tuple[int, int, int]]:
    """Per event id of the *stored* ``labels`` rows matching ``where`` (no FINAL):
    (rows, final rows they collapse to, distinct labels among them).

    Reading ``labels FINAL`` collapses duplicates by construction, so it cannot show that storage
    converges to one row per id. ReplacingMergeTree merges copies only within one partition
    (``toYYYYMM(event_time)``) and one sorting key (``task, event_id``), so the number of distinct
    (task, month) pairs is the number of rows an id keeps after every merge - a writer whose copies
    differ there (or that labels one event twice for different tasks) shows up as more than one.
    """
    rows = query(
        settings,
        "SELECT event_id, count(), uniqExact(task, toYYYYMM(event_time)), uniqExact(label) "
        f"FROM labels WHERE {where} GROUP BY event_id",
        params,
    )
    return {event_id: (n, final, labels) for event_id, n, final, labels in rows}


def explainer_available() -> bool:
    """Whether this checkout's CLI has the explainer service (``driftline explainer``)."""
    from driftline.apps.cli import app

    return any(
        (command.name or getattr(command.callback, "__name__", "")) == "explainer"
        for command in app.registered_commands
    )


def event_doc(task: str, event_id: str, text: str, source: str = "bench") -> dict[str, Any]:
    """The input event carrying ``text``: a news article (title + body) or a chat message."""
    if task == "chat_sentiment":
        return {
            "id": event_id,
            "timestamp": time.time(),
            "conversation_id": source,
            "user": source,
            "channel": source,
            "text": text,
            "language": "zh",
        }
    title, _, body = text.partition(". ")
    return {"id": event_id, "timestamp": time.time(), "source": source, "title": title, "body": body}


def news_messages(ids_and_texts: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Keyed news-topic messages (``PipelineRun.produce``) for (event id, article text) pairs."""
    return [
        (i.encode(), json.dumps(event_doc("news_topic", i, t, "test")).encode()) for i, t in ids_and_texts
    ]


def stop_process(proc: subprocess.Popen, timeout_s: float = 30) -> int:
    """SIGTERM ``proc`` and wait; SIGKILL it if it has not exited after ``timeout_s``. Its exit code."""
    proc.terminate()
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def unique_suffix(prefix: str = "") -> str:
    """A short collision-free name part (valid in Kafka topics, ClickHouse and Triton names)."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


# Per task: examples per class, optimiser steps, head learning rate. The chat model needs more steps
# than the news one before it predicts "negative" at all (the surge test plants negative messages).
RECIPES: dict[str, dict[str, float]] = {
    "news_topic": {"limit": 16, "max_steps": 24},
    "chat_sentiment": {"limit": 32, "max_steps": 80, "head_lr": 1e-2},
}


def pipeline_artifact(task_name: str) -> Path:
    """The task's small test classifier, trained on first use and cached; returns its folder."""
    from driftline.models.datasets import limit_per_class, load_dataset
    from driftline.models.tasks import get_task
    from driftline.models.training import train_classifier

    recipe = RECIPES.get(task_name, {"limit": 16, "max_steps": 24})
    name = "pipeline-" + "-".join(f"{k}{v:g}" for k, v in sorted(recipe.items()))
    out = get_settings().cache_dir / "test-artifacts" / task_name / name
    if (out / META_FILE).is_file():
        return out
    task = get_task(task_name)
    train = limit_per_class(load_dataset(task.dataset).split("train"), int(recipe["limit"]), seed=0)
    staging = out.with_name(f".{out.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    options = {"head_lr": recipe["head_lr"]} if "head_lr" in recipe else {}
    train_classifier(
        task,
        train,
        None,
        out_dir=staging,
        max_steps=int(recipe["max_steps"]),
        batch_size=8,
        max_length=64,
        progress=False,
        **options,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staging, out)
    except OSError:  # a parallel run finished first: use theirs
        shutil.rmtree(staging, ignore_errors=True)
    return out


def quick_demo_adapter() -> Path:
    """The quick demo's first news adapter (trained without the class that emerges later; cached)."""
    from driftline.apps.demo.options import DemoConfig
    from driftline.models.cache import get_or_train
    from driftline.models.tasks import get_task

    config = DemoConfig.preset(quick=True, run_dir=get_settings().run_dir / "bench")
    plan = config.news_train
    return get_or_train(
        get_task("news_topic"),
        exclude=[config.new_class],
        limit=plan.limit_per_class,
        max_steps=plan.max_steps,
        epochs=plan.epochs,
        batch_size=plan.batch_size,
        seed=config.seed,
        progress=True,
        root=get_settings().cache_dir / str(config.artifacts_subdir) / "news_topic",
    ).artifact_dir


@dataclass
class ServedModel:
    """A test model loaded in Triton under its own name, with the version and adapter hash exported."""

    task: str
    name: str
    version: str
    adapter_hash: str


@contextlib.contextmanager
def served_model(
    task: str, *, model_py: str | None = None, parameters: Mapping[str, str] | None = None
) -> Iterator[ServedModel]:
    """Export the task's test artifact as ``test_pipe_<task>_<random>``, load it in Triton, clean up.

    ``model_py`` replaces the version's ``model.py`` (a test wrapper around the serving model) and
    ``parameters`` are added to its config's parameters (what such a wrapper reads).
    """
    from google.protobuf import text_format

    from driftline.models.inference.triton import TritonClient
    from driftline.models.triton.export import CONFIG_FILE, GPU_CONFIG_FILE, export, read_config

    artifact = pipeline_artifact(task)
    name = f"test_pipe_{task}_{uuid.uuid4().hex[:6]}"
    repository = get_settings().triton.repository
    version = export(task, artifact, name=name, repository=repository)
    if model_py is not None:
        (repository / name / str(version) / "model.py").write_text(model_py, encoding="utf-8")
    for file in (CONFIG_FILE, GPU_CONFIG_FILE) if parameters else ():
        config = read_config(repository / name / file)
        for key, value in parameters.items():  # type: ignore[union-attr]
            config.parameters[key].string_value = value
        (repository / name / file).write_text(text_format.MessageToString(config), encoding="utf-8")

    async def control(action: str) -> None:
        async with TritonClient(timeout_s=120) as client:
            await getattr(client, action)(name)

    try:
        asyncio.run(control("load"))
        yield ServedModel(task, name, str(version), read_meta(artifact).adapter_hash)
    finally:
        with contextlib.suppress(Exception):
            asyncio.run(control("unload"))
        shutil.rmtree(repository / name, ignore_errors=True)


def clickhouse():
    """A clickhouse-driver client on the configured database."""
    from clickhouse_driver import Client

    s = get_settings().clickhouse
    return Client(
        host=s.host, port=s.port, database=s.database, user=s.user, password=s.password.get_secret_value()
    )


@dataclass
class Sent:
    """Where a produced message landed (topic, partition, offset)."""

    topic: str
    partition: int
    offset: int


def worker_env(
    base: Mapping[str, str], topics: Topics, app_id: str, routes: Mapping[str, str], extra: Mapping[str, str]
) -> dict[str, str]:
    """Environment for a ``driftline worker`` subprocess on a test run's own topics, app id and models."""
    env = dict(base)
    for name in Topics.model_fields:
        env[f"DRIFTLINE_KAFKA__TOPICS__{name.upper()}"] = getattr(topics, name)
    env["DRIFTLINE_PIPELINE__APP_ID"] = app_id
    for kind, value in routes.items():
        env[f"DRIFTLINE_ROUTES__{kind.upper()}"] = value
    env.update(extra)
    return env


@dataclass
class PipelineRun:
    """One isolated pipeline: its own topics, consumer group (app id) and workers.

    ``base_env`` is the environment the workers start from and the run's settings are read from
    (default: this process's, i.e. the shared stack); a TLS cluster's environment points workers and
    the run's own Kafka clients at that cluster.
    """

    routes: dict[str, str]  # DRIFTLINE_ROUTES__<NEWS|CHAT> values, e.g. "news_topic@test_pipe_..."
    extra_env: dict[str, str] = field(default_factory=dict)
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    workers: list[tuple[subprocess.Popen, int, Path]] = field(default_factory=list)
    base_env: dict[str, str] | None = None
    services: list[tuple[subprocess.Popen, Path]] = field(default_factory=list)  # explainers

    @property
    def topics(self) -> Topics:
        """This run's own topic names (``test.pipe.<suffix>.<kind>``)."""
        return Topics(**{name: f"test.pipe.{self.suffix}.{name}" for name in Topics.model_fields})

    def env(self) -> dict[str, str]:
        """Environment for this run's worker subprocesses."""
        base = os.environ if self.base_env is None else self.base_env
        return worker_env(base, self.topics, f"test-pipe-{self.suffix}", self.routes, self.extra_env)

    @property
    def settings(self) -> Settings:
        """The settings of this run's own clients (Kafka security included): the process's or base_env's."""
        return get_settings() if self.base_env is None else settings_for(self.env())

    def create_topics(self, partitions: int = 4) -> None:
        """Create this run's topics (configured message limit, replication and security settings)."""
        from driftline.kafka_admin import create_missing_topics

        asyncio.run(create_missing_topics(self.settings, self.topics.all(), partitions=partitions))

    def start_worker(self, log_dir: Path) -> int:
        """Start a ``driftline worker`` on a free web port, logging to ``log_dir``; returns the port."""
        port = free_ports(1)[0]
        log = log_dir / f"worker-{self.suffix}-{port}.log"
        cmd = [
            sys.executable,
            "-m",
            "driftline.apps.cli",
            "worker",
            "--web-port",
            str(port),
            "--client",
            "triton",
        ]
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=self.env(),
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append((proc, port, log))
        return port

    def start_explainer(self, log_dir: Path) -> subprocess.Popen:
        """Start ``driftline explainer`` on this run's predictions topic, logging to ``log_dir``.

        It gets a consumer group of its own that starts at the topic's beginning, so it sees every
        prediction of the run whenever it finishes starting; ``stop`` ends it with the workers.
        """
        env = {
            **self.env(),
            "DRIFTLINE_EXPLAINER__GROUP_ID": f"test-explainer-{self.suffix}",
            "DRIFTLINE_EXPLAINER__AUTO_OFFSET_RESET": "earliest",
        }
        log = log_dir / f"explainer-{self.suffix}-{len(self.services)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "driftline.apps.cli", "explainer"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.services.append((proc, log))
        return proc

    def health(self, port: int) -> tuple[int, dict[str, Any]]:
        """HTTP status and JSON body of a worker's /health (0 and {} if unreachable)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except OSError:
            return 0, {}

    def metrics(self, port: int) -> str:
        """A worker's Prometheus /metrics text."""
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()

    def wait_healthy(self, timeout: float = 120.0) -> None:
        """Wait until every worker's /health answers 200; raise with its log if one exits or times out."""
        deadline = time.monotonic() + timeout
        for proc, port, log in self.workers:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
                status, report = self.health(port)
                if status == 200:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"worker on :{port} not healthy: {report}\n{log.read_text()[-3000:]}")
                time.sleep(1)

    def stop(self) -> None:
        """Stop the workers and services (TERM, then KILL after 30 s) and delete this run's topics."""
        procs = [proc for proc, _, _ in self.workers] + [proc for proc, _ in self.services]
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.workers.clear()
        self.services.clear()
        with contextlib.suppress(Exception):
            asyncio.run(self._delete_topics())

    async def _delete_topics(self) -> None:
        """Drop this run's topics and Faust's internal ones (changelogs, leader topic)."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(**kafka_client_kwargs(self.settings, request_timeout_ms=15000))
        await admin.start()
        try:
            mine = (f"test.pipe.{self.suffix}.", f"test-pipe-{self.suffix}-")
            names = [t for t in await admin.list_topics() if t.startswith(mine)]
            if names:
                await admin.delete_topics(names)
        finally:
            await admin.close()

    def produce(self, topic: str, messages: list[tuple[bytes | None, bytes]]) -> list[Sent]:
        """Send ``(key, value)`` messages to ``topic``; returns where each landed, in order."""

        async def run() -> list[Sent]:
            producer = kafka_producer(self.settings, max_request_size=32 << 20, linger_ms=5)
            await producer.start()
            try:
                futures = [await producer.send(topic, value=value, key=key) for key, value in messages]
                return [Sent(m.topic, m.partition, m.offset) for m in await asyncio.gather(*futures)]
            finally:
                await producer.stop()

        return asyncio.run(run())

    def consume_all(self, topic: str, idle_s: float = 3.0) -> list[bytes]:
        """Every message currently in ``topic`` (reads until ``idle_s`` without new messages)."""
        return asyncio.run(consume_all(self.settings, topic, idle_s))


async def consume_all(settings: Settings, topic: str, idle_s: float = 3.0) -> list[bytes]:
    """Every message now in ``topic`` (reads until ``idle_s`` pass without a new one)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        **kafka_client_kwargs(
            settings,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            max_partition_fetch_bytes=32 << 20,
            fetch_max_bytes=64 << 20,
        ),
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=int(idle_s * 1000))
            if not batch:
                return values
            for records in batch.values():
                values.extend(r.value for r in records)
    finally:
        await consumer.stop()


def wait_for(predicate, timeout: float, interval: float = 1.0, *, ignore_errors: bool = False):
    """Poll ``predicate()`` until it returns a truthy value; returns the last value either way.

    ``ignore_errors``: a predicate that raises counts as "not yet" (a service is restarting).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:
            if not ignore_errors:
                raise
            value = None
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


class TcpProxy:
    """A TCP forwarder we can take down and bring back, to fake a ClickHouse outage for one worker.

    The shared ClickHouse must never be stopped; pointing a worker at this proxy instead lets a test
    cut *that worker's* connection (existing connections are closed, new ones refused).
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        import threading

        self.target = (target_host, target_port)
        self.port = free_ports(1)[0]
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def up(self) -> None:
        """Start accepting and forwarding connections on ``self.port``."""

        async def start() -> None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True
            )

        self._run(start())

    def down(self) -> None:
        """Stop listening and close every forwarded connection (the outage)."""

        async def stop() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
                self._server = None
            for writer in list(self._writers):
                writer.close()
            self._writers.clear()

        self._run(stop())

    def close(self) -> None:
        """Take the proxy down for good and stop its event-loop thread."""
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
