"""Pipeline benchmark: end-to-end events/s and latency (produced to Kafka -> row in ClickHouse).

Needs the local stack: ``python -m bench.pipeline_bench [--quick] [--only raw,batched,per_event,peer,events]
[--out DIR]`` writes ``bench/results/pipeline_bench.json`` and ``.md``. Sections, figures and targets:
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil

import driftline.apps.testing.harness as harness
from bench.timing import percentile
from driftline.apps.testing.harness import (
    PipelineRun,
    ServedModel,
    clickhouse,
    event_doc,
    explainer_available,
    served_model,
)
from driftline.clients import kafka_producer
from driftline.settings import Settings, get_settings

REPO_ROOT = Path(__file__).resolve().parent.parent

RESULTS = REPO_ROOT / "bench" / "results"
TASKS = ("news_topic", "chat_sentiment")
SECTIONS = ("raw", "batched", "per_event", "peer", "events")
P1_TARGET = 0.9
P2_TARGET = 10.0
LATENCY_TARGET_BATCHES = 4  # p99 at half load should stay under 4 one-batch model times
HALF_LOAD = 0.5
WARMUP_EVENTS = 8
RAW_SINGLE_TEXTS = 64  # texts the raw section also runs one per call (the per-event ceiling)

#: events per run: (quick, default)
COUNTS = {
    "batched": (400, 1800),  # long enough that filling and draining the pipeline are a small part
    "paced": (60, 200),
    "per_event": (30, 60),
    "peer": (30, 120),
    "events_news_topic": (200, 600),
    "events_chat_sentiment": (200, 1200),
}


# ---------------------------------------------------------------- texts and events


def task_texts(task: str, n: int) -> list[str]:
    """``n`` texts of the task's test split (repeated when it has fewer), in split order."""
    from driftline.models.datasets import load_dataset
    from driftline.models.tasks import get_task

    examples = load_dataset(get_task(task).dataset).split("test")
    return [examples[i % len(examples)].text for i in range(n)]


def topic_of(run: PipelineRun, task: str) -> str:
    """The run's input topic of ``task``."""
    return run.topics.chat if task == "chat_sentiment" else run.topics.news


# ---------------------------------------------------------------- producing and measuring


async def _produce_paced(
    settings: Settings, topic: str, messages: list[tuple[str, bytes]], rate: float | None, sent_at: dict
) -> None:
    """Send in order, ``rate`` per second (None: all at once), recording each event's send time."""
    producer = kafka_producer(settings, linger_ms=5)
    await producer.start()
    try:
        started = time.perf_counter()
        futures = []
        for i, (event_id, value) in enumerate(messages):
            if rate:
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent_at[event_id] = time.time()
            futures.append(await producer.send(topic, value=value, key=event_id.encode()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def rows_seen(query: str, prefix: str) -> list[str]:
    """Event ids starting with ``prefix`` that ``query`` (a SELECT of event_id ... LIKE %(p)s) finds."""
    client = clickhouse()
    try:
        return [event_id for (event_id,) in client.execute(query, {"p": f"{prefix}%"})]
    finally:
        client.disconnect()


LABELS_QUERY = "SELECT event_id FROM labels WHERE event_id LIKE %(p)s"


def measure(
    settings: Settings,
    topic: str,
    task: str,
    texts: list[str],
    prefix: str,
    *,
    poll: float,
    rate: float | None = None,
    query: str = LABELS_QUERY,
    timeout_s: float = 900.0,
) -> dict[str, Any]:
    """Produce one event per text (ids ``<prefix><i>``) and poll ClickHouse until every row is there.

    Returns events/s (rows stored / time from the first send to the last row seen), send-to-row
    latency percentiles in ms and counts.
    """
    messages = [
        (f"{prefix}{i}", json.dumps(event_doc(task, f"{prefix}{i}", text), ensure_ascii=False).encode())
        for i, text in enumerate(texts)
    ]
    sent_at: dict[str, float] = {}
    producer = threading.Thread(
        target=lambda: asyncio.run(_produce_paced(settings, topic, messages, rate, sent_at)), daemon=True
    )
    started = time.time()
    producer.start()
    seen: dict[str, float] = {}
    deadline = started + timeout_s
    while len(seen) < len(messages) and time.time() < deadline:
        found = rows_seen(query, prefix)
        now = time.time()
        for event_id in found:
            seen.setdefault(event_id, now)
        if len(seen) < len(messages):
            if not producer.is_alive() and len(sent_at) < len(messages):
                break  # the producer failed: what was sent is all there is to wait for
            time.sleep(poll)
    producer.join(timeout=60)
    finished = max(seen.values()) if seen else time.time()
    elapsed = finished - started
    latencies = [(seen[i] - sent_at[i]) * 1000.0 for i in seen if i in sent_at]
    return {
        "task": task,
        "rate": rate,
        "events": len(messages),
        "stored": len(seen),
        "produce_s": round(max(sent_at.values()) - started, 3) if sent_at else None,
        "seconds": round(elapsed, 3),
        "events_per_s": round(len(seen) / elapsed, 2) if elapsed > 0 else 0.0,
        "latency_p50_ms": round(percentile(latencies, 0.5), 1) if latencies else None,
        "latency_p99_ms": round(percentile(latencies, 0.99), 1) if latencies else None,
        "latency_mean_ms": round(statistics.fmean(latencies), 1) if latencies else None,
    }


def warm_up(settings: Settings, topic: str, task: str, texts: list[str], prefix: str, poll: float) -> None:
    """A few events first, waited for: worker, model and connections are warm when timing starts."""
    measure(settings, topic, task, texts[:WARMUP_EVENTS], prefix, poll=poll, timeout_s=300.0)


def service_processes(run: PipelineRun | None = None) -> dict[str, list[psutil.Process]]:
    """The processes behind each part: Kafka, ClickHouse, Triton (with its backend stubs), the
    run's workers and services, and this benchmark (the load generator and poller)."""
    s = get_settings()
    ports = {s.kafka.port: "kafka", s.clickhouse.port: "clickhouse", s.triton.grpc_port: "triton"}
    found: dict[str, list[psutil.Process]] = {"bench": [psutil.Process()]}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port in ports and conn.pid:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(conn.pid)
                found[ports[conn.laddr.port]] = [proc, *proc.children(recursive=True)]
    if run is not None:
        found["worker"] = [psutil.Process(p.pid) for p, _, _ in run.workers]
        found["services"] = [psutil.Process(p.pid) for p, _ in getattr(run, "services", [])]
    return found


def cpu_seconds(processes: Mapping[str, list[psutil.Process]]) -> dict[str, float]:
    """User + system CPU seconds each part has used so far."""
    out: dict[str, float] = {}
    for part, procs in processes.items():
        total = 0.0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        out[part] = total
    return out


def cpu_share(before: Mapping[str, float], after: Mapping[str, float], seconds: float) -> dict[str, float]:
    """Each part's share of the machine's CPU time between two ``cpu_seconds`` readings."""
    available = seconds * (psutil.cpu_count() or 1)
    shares = {part: round((after[part] - before.get(part, 0.0)) / available, 3) for part in after}
    shares["idle"] = round(max(0.0, 1.0 - sum(shares.values())), 3)
    return shares


def worker_rss(run: PipelineRun) -> dict[str, float]:
    """RSS in MiB of the run's worker and service processes."""
    procs = [(f"worker:{p.pid}", p) for p, _, _ in run.workers]
    procs += [(f"service:{p.pid}", p) for p, _ in getattr(run, "services", [])]
    out: dict[str, float] = {}
    for name, proc in procs:
        with contextlib.suppress(psutil.Error):
            out[name] = round(psutil.Process(proc.pid).memory_info().rss / 2**20, 1)
    return out


@contextlib.contextmanager
def pipeline(
    routes: dict[str, str], log_dir: Path, extra_env: dict[str, str] | None = None, explainer: bool = False
) -> Iterator[PipelineRun]:
    """A started, healthy worker on private topics (and the explainer beside it when asked)."""
    run = PipelineRun(routes=routes, extra_env=extra_env or {})
    run.create_topics(partitions=4)
    try:
        run.start_worker(log_dir)
        if explainer:
            run.start_explainer(log_dir)
        run.wait_healthy(timeout=180)
        yield run
    finally:
        run.stop()


def route(served: ServedModel) -> str:
    """A ``DRIFTLINE_ROUTES__*`` value sending a topic to ``served``."""
    return f"{served.task}@{served.name}"


# ---------------------------------------------------------------- sections


def section_raw(served: ServedModel, texts: list[str], max_batch: int) -> dict[str, Any]:
    """The served version's chosen engine in this process: sorted budget plan, and one max_batch call."""
    from bench.timing import encode_texts, engine_call, run_plan
    from driftline.models.artifacts import read_meta
    from driftline.models.engines import load_engine
    from driftline.models.text.batching import plan_batches

    triton = get_settings().triton
    folder = triton.repository / served.name / served.version
    name = read_meta(folder).engine
    engine = load_engine(folder, name, triton.torch_threads)
    encoded = encode_texts(folder, texts)
    plan = plan_batches(encoded.lengths, triton.token_budget, max_batch)
    call = engine_call(engine, encoded)
    call(plan[0])  # warm-up
    best = max((run_plan(call, plan, len(texts)) for _ in range(2)), key=lambda r: r.sentences_per_s)
    one = list(range(min(max_batch, len(texts))))
    one_batch = run_plan(call, [one] * 3, len(texts))
    singles = run_plan(call, [[i] for i in range(min(RAW_SINGLE_TEXTS, len(texts)))], len(texts))
    return {
        "engine": name,
        "texts": len(texts),
        "token_budget": triton.token_budget,
        "sentences_per_s": round(best.sentences_per_s, 2),
        "calls": len(best.latencies_ms),
        "max_batch": max_batch,
        "one_batch_ms": round(statistics.median(one_batch.latencies_ms), 1),
        "one_batch_tokens": len(one) * max(encoded.lengths[i] for i in one),
        "batch1_sentences_per_s": round(singles.sentences_per_s, 2),
    }


def section_batched(
    served: ServedModel, texts: list[str], paced_texts: list[str], log_dir: Path, poll: float
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, float]]:
    """Unpaced events/s at default settings, then latency at half that rate, on one worker."""
    with pipeline({"news": route(served), "chat": "-"}, log_dir) as run:
        topic = run.topics.news
        warm_up(run.settings, topic, served.task, texts, f"{run.suffix}-w", poll)
        processes = service_processes(run)
        before, started = cpu_seconds(processes), time.time()
        batched = measure(run.settings, topic, served.task, texts, f"{run.suffix}-b", poll=poll)
        # where the machine's CPU went during the run: P1 is about the engine's share of it
        batched["cpu_share"] = cpu_share(before, cpu_seconds(processes), time.time() - started)
        rate = round(batched["events_per_s"] * HALF_LOAD, 2)
        paced = None
        if rate > 0:
            paced = measure(
                run.settings, topic, served.task, paced_texts, f"{run.suffix}-p", poll=poll, rate=rate
            )
        return batched, paced, worker_rss(run)


def section_per_event(served: ServedModel, texts: list[str], log_dir: Path, poll: float) -> dict[str, Any]:
    """Events/s with one event per inference call (``max_batch`` 1), otherwise default settings."""
    with pipeline(
        {"news": route(served), "chat": "-"}, log_dir, {"DRIFTLINE_PIPELINE__MAX_BATCH": "1"}
    ) as run:
        topic = run.topics.news
        warm_up(run.settings, topic, served.task, texts, f"{run.suffix}-w", poll)
        result = measure(run.settings, topic, served.task, texts, f"{run.suffix}-s", poll=poll)
        return {**result, "max_batch": 1}


def section_peer(served: ServedModel, texts: list[str], log_dir: Path, poll: float) -> dict[str, Any]:
    """The plain peer (``run_peer``) on a topic and table of its own; both removed afterwards."""
    run = PipelineRun(routes={"news": "-", "chat": "-"})  # its topics only: no worker
    run.create_topics(partitions=4)
    table = f"bench_peer_{run.suffix}"
    folder = get_settings().triton.repository / served.name / served.version
    log = log_dir / f"peer-{run.suffix}.log"
    cmd = [sys.executable, "-c", PEER_COMMAND, "--topic", run.topics.news, "--version-dir", str(folder),
           "--table", table, "--group", f"bench-peer-{run.suffix}"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while b"ready" not in log.read_bytes():
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"plain peer did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        query = f"SELECT event_id FROM {table} WHERE event_id LIKE %(p)s"
        topic = run.topics.news
        warm = texts[:WARMUP_EVENTS]
        measure(
            run.settings, topic, served.task, warm, f"{run.suffix}-w", poll=poll, query=query, timeout_s=300
        )
        result = measure(run.settings, topic, served.task, texts, f"{run.suffix}-e", poll=poll, query=query)
        rss = round(psutil.Process(proc.pid).memory_info().rss / 2**20, 1)
        how = "transformers feature-extraction pipeline, one event per call, one ClickHouse insert per event"
        return {**result, "rss_mib": rss, "how": how}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(Exception):
            client = clickhouse()
            client.execute(f"DROP TABLE IF EXISTS {table}")
            client.disconnect()
        run.stop()


def section_events(
    served: Mapping[str, ServedModel], texts: Mapping[str, list[str]], log_dir: Path, poll: float
) -> dict[str, Any]:
    """Each task at default settings through one worker (the explainer service beside it when the CLI
    has one)."""
    explainer = explainer_available()
    routes = {"news": route(served["news_topic"]), "chat": route(served["chat_sentiment"])}
    out: dict[str, Any] = {"explainer": explainer, "tasks": {}}
    with pipeline(routes, log_dir, explainer=explainer) as run:
        for task in TASKS:
            topic = topic_of(run, task)
            prefix = f"{run.suffix}-{task}-"
            warm_up(run.settings, topic, task, texts[task], f"{prefix}w", poll)
            out["tasks"][task] = measure(run.settings, topic, task, texts[task], f"{prefix}e", poll=poll)
        if explainer:
            with contextlib.suppress(Exception):  # counting is a detail: the run's figures stand without it
                client = clickhouse()
                rows = client.execute(
                    "SELECT count() FROM explanations WHERE event_id LIKE %(p)s", {"p": f"{run.suffix}-%"}
                )
                client.disconnect()
                out["explained_by_end"] = int(rows[0][0])
        out["rss_mib"] = worker_rss(run)
    return out


def stack_rss() -> dict[str, float]:
    """RSS in MiB of Kafka, ClickHouse and Triton (with its backend stubs) and of this process."""
    found: dict[str, float] = {}
    for part, procs in service_processes().items():
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        found[part] = round(total / 2**20, 1)
    return found


# ---------------------------------------------------------------- the plain peer (its own process)
#
# A plain peer of the pipeline: the same classifier "as users write it" (section ``peer``).
#
# ``section_peer`` starts it: ``python -c PEER_COMMAND --topic T --version-dir D --table TBL --group G``.
#
# What driftline's streaming, micro-batching and engine choice are measured against
# (``vs_plain_peer``): one process that reads the input topic, classifies one message at a time with a
# transformers ``pipeline("feature-extraction")`` over the version's merged encoder (LoRA folded into
# the weights, ``load_classifier``), mean-pools the token vectors and applies the Linear head (the head
# was trained on mean pooling; one text has no padding, so the plain mean is the masked one), and inserts
# one ClickHouse row per event with clickhouse-driver. It reads the text the worker reads (news: title,
# blank line, body; chat: the message) and normalizes it as the model was trained, so the comparison is
# about the serving path, not the maths.
#
# The rows go to a table of its own (``--table``, created here, dropped by the benchmark afterwards),
# never to ``labels``. It prints ``ready`` once its model is loaded and its consumer has started, so
# the benchmark counts classification time, not start-up time.

PEER_COMMAND = "from bench.pipeline_bench import run_peer; run_peer()"
TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,100}$")


def table_ddl(table: str) -> str:
    """The peer's own table: one row per classified event (valid on ClickHouse 18.16)."""
    if not TABLE_NAME.match(table):
        raise ValueError(f"not a plain table name: {table!r}")
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (event_id String, label String, confidence Float32, "
        "processed_ts_ms UInt64) ENGINE = MergeTree ORDER BY event_id"
    )


def event_text(doc: dict) -> str:
    """The text the worker classifies: a chat message, or a news article's title and body."""
    if "text" in doc:
        return str(doc["text"])
    title, body = str(doc.get("title") or ""), str(doc.get("body") or "")
    return f"{title}\n\n{body}" if title else body


def peer_classifier(version_dir: Path) -> Callable[[str], tuple[str, float]]:
    """``text -> (label, confidence)`` with a transformers pipeline over the merged encoder and the head."""
    import torch
    from transformers import pipeline

    from driftline.models.classifier import load_classifier

    clf = load_classifier(version_dir)
    extract = pipeline(
        "feature-extraction",
        model=clf.encoder,
        tokenizer=clf.tokenizer,
        tokenize_kwargs={"truncation": True, "max_length": clf.max_length},
    )

    def classify(text: str) -> tuple[str, float]:
        with torch.inference_mode():
            tokens = extract(clf.prepare([text])[0], return_tensors=True)  # [1, tokens, hidden]
            probs = torch.softmax(clf.head(tokens.mean(dim=1).float()), dim=-1)[0]
        best = int(probs.argmax())
        return clf.labels[best], float(probs[best])

    return classify


async def serve_peer(topic: str, version_dir: Path, table: str, group: str) -> None:
    """Consume ``topic`` for ever: classify each message and insert its row."""
    from aiokafka import AIOKafkaConsumer
    from clickhouse_driver import Client

    from driftline.clients import kafka_client_kwargs
    from driftline.settings import get_settings

    settings = get_settings()
    classify = peer_classifier(version_dir)
    ch = settings.clickhouse
    password = ch.password.get_secret_value()
    client = Client(host=ch.host, port=ch.port, database=ch.database, user=ch.user, password=password)
    client.execute(table_ddl(table))
    consumer = AIOKafkaConsumer(
        topic, **kafka_client_kwargs(settings, group_id=group, auto_offset_reset="earliest")
    )
    await consumer.start()
    print("ready", flush=True)
    try:
        async for message in consumer:
            doc = json.loads(message.value)
            label, confidence = classify(event_text(doc))
            client.execute(
                f"INSERT INTO {table} (event_id, label, confidence, processed_ts_ms) VALUES",
                [(str(doc["id"]), label, confidence, int(time.time() * 1000))],
            )
    finally:
        await consumer.stop()
        client.disconnect()


def run_peer(argv: list[str] | None = None) -> None:
    """The plain peer's command line (runs until killed)."""
    parser = argparse.ArgumentParser(prog="plain peer", description="A plain peer of the pipeline")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--version-dir", type=Path, required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--group", required=True)
    args = parser.parse_args(argv)
    table_ddl(args.table)  # refuse a bad name before loading anything
    asyncio.run(serve_peer(args.topic, args.version_dir, args.table, args.group))


# ---------------------------------------------------------------- the report (pure)


def _ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, digits)


def assemble(meta: Mapping[str, Any], sections: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON document from the sections' measurements (missing sections give null figures).

    ``sections`` may hold ``raw``, ``batched``, ``paced``, ``per_event``, ``peer``, ``events``
    (``{"tasks": {task: measure}, ...}``) and ``rss_mib``, as the section functions return them.
    """
    raw, batched, paced = sections.get("raw"), sections.get("batched"), sections.get("paced")
    single, peer, events = sections.get("per_event"), sections.get("peer"), sections.get("events")
    batched_rate = batched["events_per_s"] if batched else None
    one_batch_ms = raw["one_batch_ms"] if raw else None
    event_tasks = (events or {}).get("tasks", {})
    return {
        "meta": dict(meta),
        "p1": _ratio(batched_rate, raw["sentences_per_s"] if raw else None),
        "p1_target": P1_TARGET,
        "p2": _ratio(batched_rate, single["events_per_s"] if single else None, 2),
        "p2_target": P2_TARGET,
        # what the engine itself allows: batched sentences/s / one-text-per-call sentences/s; the
        # pipeline's P2 can exceed it only by what per-event overheads add to the denominator
        "p2_engine_ceiling": _ratio(
            raw["sentences_per_s"] if raw else None, (raw or {}).get("batch1_sentences_per_s"), 2
        ),
        "p99_ms_at_half_load": paced["latency_p99_ms"] if paced else None,
        "p99_target_ms": round(LATENCY_TARGET_BATCHES * one_batch_ms, 1) if one_batch_ms else None,
        "vs_plain_peer": _ratio(batched_rate, peer["events_per_s"] if peer else None, 2),
        "events_per_s": {
            task: (event_tasks[task]["events_per_s"] if task in event_tasks else None) for task in TASKS
        },
        "details": {
            "raw_engine": raw,
            "pipeline_batched": batched,
            "pipeline_half_load": paced,
            "pipeline_per_event": single,
            "plain_peer": peer,
            "events": events,
        },
        "rss_mib": dict(sections.get("rss_mib") or {}),
    }


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def markdown(r: Mapping[str, Any]) -> str:
    """The figures and the runs behind them as Markdown."""
    meta, d = r["meta"], r["details"]
    raw = d.get("raw_engine") or {}
    events = d.get("events") or {}
    lines = [
        f"# Pipeline benchmark ({meta.get('when', '')})",
        "",
        f"Mode {meta.get('mode')}; {meta.get('cpus')} CPUs, load {meta.get('load_avg_1m')} at the end; "
        f"served `{meta.get('models', {})}`.",
        "",
        "| figure | value | target |",
        "|---|---:|---:|",
        f"| P1 = end-to-end batched / raw engine | {_cell(r['p1'])} | >= {r['p1_target']} |",
        f"| P2 = batched / per-event | {_cell(r['p2'])} | >= {r['p2_target']} |",
        f"| the engine's own batched / batch-1 sentences/s | {_cell(r.get('p2_engine_ceiling'))} | |",
        f"| p99 send-to-row ms at half load | {_cell(r['p99_ms_at_half_load'])} | "
        f"<= {_cell(r['p99_target_ms'])} (4 x one batch) |",
        f"| driftline / plain peer events/s | {_cell(r['vs_plain_peer'])} | |",
    ]
    for task, rate in r["events_per_s"].items():
        lines.append(f"| events/s {task} (default settings) | {_cell(rate)} | |")
    lines += [
        "",
        "| run | events | events/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    if raw:
        lines.append(
            f"| raw engine `{raw['engine']}` (sorted budget {raw['token_budget']}) | {raw['texts']} | "
            f"{raw['sentences_per_s']} | | one {raw['max_batch']}-row call: {raw['one_batch_ms']} ms |"
        )
        if raw.get("batch1_sentences_per_s"):
            lines.append(
                f"| raw engine, one text per call | {min(RAW_SINGLE_TEXTS, raw['texts'])} | "
                f"{raw['batch1_sentences_per_s']} | | |"
            )
    named = [
        ("pipeline batched (default settings)", d.get("pipeline_batched")),
        ("pipeline at half load", d.get("pipeline_half_load")),
        ("pipeline per event (max_batch 1)", d.get("pipeline_per_event")),
        ("plain peer", d.get("plain_peer")),
        *[(f"events {task}", run) for task, run in events.get("tasks", {}).items()],
    ]
    for label, run in named:
        if run:
            rate = f", paced {run['rate']}/s" if run.get("rate") else ""
            lines.append(
                f"| {label}{rate} | {run['stored']}/{run['events']} | {run['events_per_s']} | "
                f"{_cell(run['latency_p50_ms'])} | {_cell(run['latency_p99_ms'])} |"
            )
    share = (d.get("pipeline_batched") or {}).get("cpu_share")
    if share:
        lines += ["", "CPU share during the batched run (of all cores): "
                  + ", ".join(f"{k} {v:.0%}" for k, v in share.items())]  # fmt: skip
    if events:
        lines += [
            "",
            f"Explainer service beside the events worker: {'yes' if events.get('explainer') else 'no'}",
        ]
        if "explained_by_end" in events:
            lines[-1] += f" ({events['explained_by_end']} explanations written by the end of the run)."
    if r.get("rss_mib"):
        lines += ["", "RSS (MiB): " + ", ".join(f"{k} {v}" for k, v in r["rss_mib"].items())]
    lines += ["", "Latency = producer send -> first ClickHouse poll seeing the row."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the chosen sections, write pipeline_bench.json and .md under ``--out``; returns the result."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer events per run (~5 minutes)")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma list of sections: {','.join(SECTIONS)}"
    )
    parser.add_argument("--poll", type=float, default=0.1, help="ClickHouse poll interval (s)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--artifact",
        action="append",
        default=[],
        metavar="TASK=DIR",
        help="serve this trained artifact (or version folder) for TASK instead of the harness's small "
        "test model",
    )
    args = parser.parse_args(argv)
    artifacts = dict(item.split("=", 1) for item in args.artifact)
    if artifacts:  # served_model asks harness.pipeline_artifact for the weights it exports
        small = harness.pipeline_artifact
        harness.pipeline_artifact = lambda task: Path(artifacts[task]) if task in artifacts else small(task)
    # Exporting the benchmark's models chooses their engines by the usual rule on a smaller held-out
    # sample (256 texts x every engine would take minutes per model; bench.models_bench measures
    # engines in full).
    os.environ.setdefault("DRIFTLINE_TRITON__ENGINE_SELECTION_TEXTS", "32" if args.quick else "64")
    get_settings.cache_clear()
    sections = [s for s in args.only.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    count = {name: pair[0 if args.quick else 1] for name, pair in COUNTS.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = get_settings().run_dir / "bench-logs"  # worker logs stay out of the results folder
    log_dir.mkdir(parents=True, exist_ok=True)
    max_batch = get_settings().pipeline.max_batch
    news_n = max(count["batched"], count["paced"], count["peer"], count["events_news_topic"])
    texts = {"news_topic": task_texts("news_topic", news_n)}
    if "events" in sections:
        texts["chat_sentiment"] = task_texts("chat_sentiment", count["events_chat_sentiment"])
    news = texts["news_topic"]
    measured: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        served = {task: stack.enter_context(served_model(task)) for task in texts}
        if "raw" in sections:
            measured["raw"] = section_raw(served["news_topic"], news[: count["batched"]], max_batch)
        rss: dict[str, float] = {}
        if "batched" in sections:
            measured["batched"], measured["paced"], worker = section_batched(
                served["news_topic"], news[: count["batched"]], news[: count["paced"]], log_dir, args.poll
            )
            rss.update(worker)
        if "per_event" in sections:
            measured["per_event"] = section_per_event(
                served["news_topic"], news[: count["per_event"]], log_dir, args.poll
            )
        if "peer" in sections:
            measured["peer"] = section_peer(served["news_topic"], news[: count["peer"]], log_dir, args.poll)
        if "events" in sections:
            event_texts = {task: texts[task][: count[f"events_{task}"]] for task in TASKS}
            measured["events"] = section_events(served, event_texts, log_dir, args.poll)
            rss.update(measured["events"]["rss_mib"])
        measured["rss_mib"] = {**stack_rss(), **rss}
    meta = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": "quick" if args.quick else "default",
        "sections": sections,
        "cpus": psutil.cpu_count(),
        "python": platform.python_version(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "max_batch": max_batch,
        "models": {task: f"{s.name} v{s.version}" for task, s in served.items()},
        "checkout": str(REPO_ROOT),
        "artifacts": artifacts or "harness test models",
    }
    result = assemble(meta, measured)
    (args.out / "pipeline_bench.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (args.out / "pipeline_bench.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
