"""The three-broker TLS cluster as a pipeline's Kafka: start it, load it, kill a broker, count.

Shared by the cluster tests and benchmark: ``start_cluster``, ``NewsLoad``, ``LabelWatch``,
``throughput`` and ``broker_kill``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftline.apps.testing.harness import PipelineRun, ServedModel, settings_for, stored_copies
from driftline.clients import clickhouse_client, kafka_producer
from driftline.settings import REPO_ROOT, Settings

CLI = [sys.executable, "-m", "driftline.apps.cli"]
NODES = 3
#: the SCRAM password of the cluster's client user (tests grep logs for it)
KAFKA_SECRET = "kfPw-Wombat-91e3c7"
#: pipeline options of every run here (the single-broker and the cluster runs alike)
PIPELINE_ENV = {
    "DRIFTLINE_PIPELINE__SINK_MAX_AGE_S": "0.5",
    "DRIFTLINE_PIPELINE__BATCH_WITHIN_S": "0.1",
}


def free_port_block(n: int) -> int:
    """A base port ``p`` with ``p .. p+n-1`` all free on 127.0.0.1 right now."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - n)
        with contextlib.ExitStack() as stack:
            try:
                for port in range(base, base + n):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return base
    raise RuntimeError(f"no {n} consecutive free ports")


@dataclass
class Cluster:
    """A running ``stack up --cluster``: the client environment, its settings and how it started."""

    env: dict[str, str]  # what a client of the cluster needs (also the CLI's environment)
    settings: Settings
    up_seconds: float
    up_output: str


def cluster_base_env(run_dir: Path, base: int, *, password: str = KAFKA_SECRET) -> dict[str, str]:
    """This process's environment minus its Kafka settings, plus the cluster's ports, run dir and user."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLINE_KAFKA__", "DRIFTLINE_RUN_DIR"))
    }
    env.update(
        DRIFTLINE_RUN_DIR=str(run_dir),
        DRIFTLINE_KAFKA__PORT=str(base),
        DRIFTLINE_KAFKA__CONTROLLER_PORT=str(base + 1),
        DRIFTLINE_KAFKA__SASL_USERNAME="driftline",
        DRIFTLINE_KAFKA__SASL_PASSWORD=password,
    )
    return env


@contextlib.contextmanager
def start_cluster(run_dir: Path, timeout_s: float = 240.0) -> Iterator[Cluster]:
    """``driftline stack up --cluster -s kafka`` on free ports in ``run_dir``; ``stack down`` afterwards."""
    env = cluster_base_env(run_dir, free_port_block(2 * NODES))
    t0 = time.monotonic()
    up = subprocess.run(
        [*CLI, "stack", "up", "--cluster", "-s", "kafka"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    seconds = time.monotonic() - t0
    try:
        if up.returncode != 0:
            raise RuntimeError(f"stack up --cluster failed:\n{up.stdout}{up.stderr}")
        exports = dict(
            line.removeprefix("export ").split("=", 1)
            for line in up.stdout.splitlines()
            if line.startswith("export DRIFTLINE_")
        )
        client_env = {**env, **exports}
        yield Cluster(client_env, settings_for(client_env), seconds, up.stdout)
    finally:
        down = subprocess.run(
            [*CLI, "stack", "down"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180
        )
        if down.returncode != 0:
            raise RuntimeError(f"stack down failed:\n{down.stdout}{down.stderr}")


def news_texts(n: int) -> list[str]:
    """``n`` news texts (bbc_news test + validation, repeated as needed), the same on every call."""
    from driftline.models.datasets import load_dataset

    examples = load_dataset("bbc_news").split("test") + load_dataset("bbc_news").split("validation")
    return [examples[i % len(examples)].text[:800] for i in range(n)]


def news_event(event_id: str, text: str) -> bytes:
    """One news event (the worker's input schema) as JSON."""
    title, _, body = text.partition(". ")
    doc = {"id": event_id, "timestamp": time.time(), "source": "bench", "title": title, "body": body}
    return json.dumps(doc).encode()


@dataclass
class NewsLoad:
    """A producer thread: ``texts`` as news events with ids ``<prefix><i>``, ``rate``/s (None: at once).

    Every send goes through ``kafka_producer`` (``acks=all``, idempotence, the settings' TLS/SASL); a
    send the broker does not acknowledge is retried with the same id (at-least-once). ``sent_at``:
    when each id was first handed to the producer; ``acked_at``: when the broker acknowledged it.
    """

    settings: Settings
    topic: str
    prefix: str
    texts: list[str]
    rate: float | None = None
    sent_at: dict[str, float] = field(default_factory=dict)
    acked_at: dict[str, float] = field(default_factory=dict)
    send_retries: int = 0
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> NewsLoad:
        """Start producing in a background thread."""
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 120.0) -> None:
        """Stop sending new events; wait until every event already sent is acknowledged."""
        self._stop.set()
        self.join(timeout)

    def join(self, timeout: float = 120.0) -> None:
        """Wait for the thread (all texts sent and acknowledged, or stopped); re-raise its error."""
        if self._thread:
            self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    @property
    def acked(self) -> set[str]:
        """Ids the brokers acknowledged so far."""
        return set(self.acked_at)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    async def _send(self, producer: Any, event_id: str, value: bytes) -> None:
        from aiokafka.errors import KafkaError

        self.sent_at[event_id] = time.time()
        while True:
            try:
                await (await producer.send(self.topic, value, key=event_id.encode()))
                self.acked_at[event_id] = time.time()
                return
            except KafkaError:
                self.send_retries += 1
                await asyncio.sleep(0.5)

    async def _run(self) -> None:
        producer = kafka_producer(self.settings, linger_ms=5, request_timeout_ms=30000, retry_backoff_ms=300)
        await producer.start()
        pending: list[asyncio.Task] = []
        try:
            started = time.monotonic()
            for i, text in enumerate(self.texts):
                if self._stop.is_set():
                    break
                if self.rate:
                    delay = started + i / self.rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                value = news_event(f"{self.prefix}{i}", text)
                pending.append(asyncio.create_task(self._send(producer, f"{self.prefix}{i}", value)))
            await asyncio.gather(*pending)
        finally:
            await producer.stop()


@dataclass
class LabelWatch:
    """Polls ``labels`` (no FINAL) every ``interval`` s; ``seen``: id -> first time its row was seen."""

    settings: Settings
    prefix: str
    interval: float = 0.5
    seen: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> LabelWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(30)

    def poll(self) -> None:
        """One query: record the ids seen for the first time."""
        client = clickhouse_client(self.settings, connect_timeout=3, send_receive_timeout=30)
        try:
            rows = client.execute(
                "SELECT DISTINCT event_id FROM labels WHERE event_id LIKE %(p)s", {"p": f"{self.prefix}%"}
            )
        finally:
            client.disconnect()
        now = time.time()
        for (event_id,) in rows:
            self.seen.setdefault(event_id, now)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # ClickHouse busy: next poll
                self.poll()
            self._stop.wait(self.interval)

    def wait_for(self, ids: set[str], timeout: float) -> bool:
        """Wait until every id in ``ids`` was seen; True if they all were."""
        deadline = time.monotonic() + timeout
        while not ids <= self.seen.keys():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True


@contextlib.contextmanager
def pipeline(
    served: ServedModel, log_dir: Path, *, base_env: Mapping[str, str] | None = None, workers: int = 2
) -> Iterator[PipelineRun]:
    """A ``PipelineRun`` (news on ``served``, chat off) with ``workers`` healthy workers; stopped after."""
    run = PipelineRun(
        routes={"news": f"{served.task}@{served.name}", "chat": "-"},
        extra_env=dict(PIPELINE_ENV),
        base_env=dict(base_env) if base_env is not None else None,
    )
    try:
        run.create_topics(partitions=4)
        for _ in range(workers):
            run.start_worker(log_dir)
        run.wait_healthy(timeout=240)
        yield run
    finally:
        run.stop()


def throughput(
    run: PipelineRun, texts: list[str], *, warmup: int = 12, timeout: float = 300.0
) -> dict[str, Any]:
    """``texts`` produced at once into a running pipeline; events/s from the first send to the last row.

    The first ``warmup`` texts are sent and labelled before (``warm_up``), outside the measurement.
    """
    if warmup:
        warm_up(run, texts[:warmup])
    prefix = f"{run.suffix}-t"
    with LabelWatch(run.settings, prefix) as watch:
        load = NewsLoad(run.settings, run.topics.news, prefix, texts).start()
        load.join(timeout)
        done = watch.wait_for(load.acked, timeout)
    started = min(load.sent_at.values())
    finished = max(watch.seen.values()) if watch.seen else time.time()
    elapsed = finished - started
    return {
        "events": len(texts),
        "labelled": len(watch.seen),
        "complete": done,
        "seconds": round(elapsed, 2),
        "events_per_s": round(len(watch.seen) / elapsed, 2) if elapsed > 0 else 0.0,
    }


def warm_up(run: PipelineRun, texts: list[str], timeout: float = 180.0) -> dict[str, Any]:
    """Send ``texts`` at once and wait for their rows: the consumer group has settled, the model is warm."""
    prefix = f"{run.suffix}-w{uuid.uuid4().hex[:4]}-"
    with LabelWatch(run.settings, prefix) as watch:
        load = NewsLoad(run.settings, run.topics.news, prefix, texts).start()
        load.join(timeout)
        done = watch.wait_for(load.acked, timeout)
    started = min(load.sent_at.values())
    return {
        "events": len(texts),
        "labelled": len(watch.seen),
        "complete": done,
        "seconds": round(max(watch.seen.values(), default=started) - started, 2),
    }


def _latencies_before(sent_at: dict[str, float], seen: dict[str, float], killed: float) -> list[float]:
    """Send-to-row latencies of the events labelled before the kill (the steady state)."""
    seen = dict(seen)
    return [t - sent_at[i] for i, t in seen.items() if t < killed and i in sent_at]


def _late_allowance(sent_at: dict[str, float], seen: dict[str, float], killed: float) -> float:
    """Latency above which an event counts as delayed by the fault: max(3 s, 2 x steady-state p95)."""
    before = _latencies_before(sent_at, seen, killed)
    return max(3.0, 2 * _percentile(before, 0.95)) if before else 3.0


def _caught_up(sent_at: dict[str, float], seen: dict[str, float], allowance: float) -> bool:
    """Every event sent more than ``allowance`` ago has its row."""
    horizon = time.time() - allowance
    seen = dict(seen)
    return all(i in seen for i, t in dict(sent_at).items() if t <= horizon)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def broker_kill(
    run: PipelineRun,
    cluster: Cluster,
    texts: list[str],
    *,
    rate: float = 6.0,
    before_s: float = 8.0,
    down_s: float = 5.0,
    after_s: float = 5.0,
    victim: str = "kafka-1",
    warmup: int = 12,
    catch_up_timeout: float = 90.0,
    settle_timeout: float = 120.0,
    progress: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """Steady news load on ``run`` (on ``cluster``); SIGKILL ``victim`` mid-load, restart it; count.

    ``texts`` bounds the load (``rate`` events/s until, at least ``after_s`` after the restart, every
    event sent more than the late allowance ago is labelled, or ``catch_up_timeout``); first
    ``warmup`` events are labelled (consumer group settled, model warm) so the load starts in a
    steady state. Recovery: from the kill until the last event the fault delayed got its label row,
    an event being delayed when its send-to-row latency exceeds max(3 s, 2 x the p95 latency of the
    events labelled before the kill: the steady state); 0 when none was. ``latency_by_send`` gives,
    per 5 s of send time relative to the kill, the events sent and their median and max latency.
    """
    from driftline.compose.stack.manager import Stack

    prefix = f"{run.suffix}-k"
    stack = Stack(cluster.settings, only=["kafka"])
    service = stack.service(victim)
    timeline: dict[str, float] = {}
    warmed = warm_up(run, texts[:warmup]) if warmup else None
    with LabelWatch(run.settings, prefix) as watch:
        load = NewsLoad(run.settings, run.topics.news, prefix, texts, rate=rate).start()
        try:
            time.sleep(before_s)
            record = service.record()
            if record is None:
                raise RuntimeError(f"{victim} is not running")
            progress(f"SIGKILL {victim} (pid {record.pid})")
            os.kill(record.pid, signal.SIGKILL)
            timeline["killed"] = time.time()
            time.sleep(down_s)
            progress(f"restarting {victim}")
            stack.up()
            timeline["restarted"] = time.time()
            progress(f"{victim} back after {timeline['restarted'] - timeline['killed']:.1f}s")
            time.sleep(after_s)
            # the load goes on until the pipeline has caught up (or catch_up_timeout): recovery is
            # then measured, not cut off by the end of the load
            allowance = _late_allowance(load.sent_at, watch.seen, timeline["killed"])
            deadline = time.monotonic() + catch_up_timeout
            while not (caught_up := _caught_up(load.sent_at, watch.seen, allowance)):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            timeline["caught_up"] = time.time()
            progress(f"caught up {timeline['caught_up'] - timeline['killed']:.1f}s after the kill")
        finally:
            load.stop()
        produced = load.acked
        progress(f"{len(produced)} events acknowledged; waiting for their labels")
        watch.wait_for(produced, settle_timeout)
        watch.poll()
    where = "event_id LIKE %(p)s"
    copies = stored_copies(run.settings, where, {"p": f"{prefix}%"})
    killed = timeline["killed"]
    latency = {i: watch.seen[i] - load.sent_at[i] for i in produced if i in watch.seen}
    baseline = _percentile(_latencies_before(load.sent_at, watch.seen, killed) or [0.0], 0.95)
    allowance = _late_allowance(load.sent_at, watch.seen, killed)
    late = [i for i, v in latency.items() if v > allowance]
    recovery = max((watch.seen[i] - killed for i in late), default=0.0)
    lost = sorted(produced - copies.keys())
    buckets: dict[int, list[float]] = {}
    for i, v in latency.items():
        buckets.setdefault(int((load.sent_at[i] - killed) // 5) * 5, []).append(v)
    by_send = [
        [start, len(vs), round(statistics.median(vs), 2), round(max(vs), 2)]
        for start, vs in sorted(buckets.items())
    ]
    return {
        "events": len(produced),
        "rate_per_s": rate,
        "labelled": len(produced & copies.keys()),
        "lost": len(lost),
        "lost_sample": lost[:10],
        "duplicates_final": sum(1 for i in produced if copies.get(i, (0, 1, 1))[1] != 1),
        "conflicting_labels": sum(1 for i in produced if copies.get(i, (0, 1, 1))[2] != 1),
        "raw_rows": sum(n for n, _, _ in copies.values()),
        "unexpected_ids": len(copies.keys() - produced),
        "broker_killed": True,
        "victim": victim,
        "broker_down_s": round(timeline["restarted"] - killed, 2),
        "caught_up_s": round(timeline["caught_up"] - killed, 2) if caught_up else None,
        "events_sent_while_down": sum(
            1 for t in load.sent_at.values() if killed <= t < timeline["restarted"]
        ),
        "producer_send_retries": load.send_retries,
        "recovery_s": round(recovery, 2),
        "late_events": len(late),
        "latency_p95_before_kill_s": round(baseline, 3),
        "late_allowance_s": round(allowance, 3),
        "latency_max_s": round(max(latency.values()), 3) if latency else None,
        "latency_mean_s": round(statistics.fmean(latency.values()), 3) if latency else None,
        "latency_by_send": {"columns": ["send_s_from_kill", "events", "p50_s", "max_s"], "rows": by_send},
        "warmup": warmed,
        "brokers_healthy_after": all(s.healthy for s in stack.status()),
        "workers_alive_after": [proc.poll() is None for proc, _, _ in run.workers],
    }
