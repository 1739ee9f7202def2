"""Pipeline benchmark: end-to-end events/s and latency (produced to Kafka -> row in ClickHouse).

Runs against the live stack with an isolated pipeline (unique topics, app id and Triton model name):

1. raw model throughput: ``TritonClient.predict`` on batches of ``--batch`` texts, ``--concurrency``
   calls in flight: what the model alone can do, measured here on the same served model, texts and
   machine state as the pipeline runs (``bench.models_bench`` measures models in more shapes),
2. the pipeline with micro-batching (``max_batch=--batch``) and with batch size 1 (per event),
   one ``driftline worker`` each; per-event latency is the time from the producer's send to the
   first ClickHouse poll that sees the label row (poll interval ``--poll``),
3. RSS of every process involved (workers, Kafka, ClickHouse, Triton, this process).

Figures of merit: P1 = end-to-end batched events/s / raw model texts/s (target >= 0.9), P2 = batched
/ per-event events/s (target >= 10). Writes ``bench/results/pipeline_bench.{json,md}``.

    python -m bench.pipeline_bench --events 600 --per-event-events 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.harness import PipelineRun, ServedModel, clickhouse, served_model  # noqa: E402
from driftline.clients import kafka_producer  # noqa: E402
from driftline.settings import Settings, get_settings  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results"


def _texts(n: int) -> list[str]:
    from driftline.models.datasets import load_dataset

    examples = load_dataset("bbc_news").split("test") + load_dataset("bbc_news").split("validation")
    return [examples[i % len(examples)].text[:1500] for i in range(n)]


async def raw_throughput(model: str, texts: list[str], batch: int, concurrency: int) -> dict[str, float]:
    """Triton alone: texts/s for ``texts`` in batches of ``batch``, ``concurrency`` calls in flight."""
    from driftline.models.inference.triton import TritonClient

    async with TritonClient(max_batch_size=batch, max_concurrency=concurrency) as client:
        await client.predict(model, texts[:batch])  # warm-up
        semaphore = asyncio.Semaphore(concurrency)

        async def one(chunk: list[str]) -> None:
            async with semaphore:
                await client.predict(model, chunk)

        started = time.perf_counter()
        await asyncio.gather(*(one(texts[i : i + batch]) for i in range(0, len(texts), batch)))
        elapsed = time.perf_counter() - started
    return {"texts": len(texts), "seconds": round(elapsed, 3), "texts_per_s": round(len(texts) / elapsed, 2)}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


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


def pipeline_run(
    served: ServedModel,
    texts: list[str],
    *,
    batch: int,
    poll: float,
    log_dir: Path,
    rate: float | None = None,
) -> dict[str, Any]:
    """One isolated worker run over ``texts``: events/s, send-to-row latency (s) and worker RSS."""
    run = PipelineRun(
        routes={"news": f"{served.task}@{served.name}", "chat": "-"},
        extra_env={
            "DRIFTLINE_PIPELINE__MAX_BATCH": str(batch),
            "DRIFTLINE_PIPELINE__SINK_MAX_ROWS": str(max(batch, 1) if batch == 1 else 2000),
            "DRIFTLINE_PIPELINE__SINK_MAX_AGE_S": "0.2" if batch > 1 else "0.05",
            "DRIFTLINE_PIPELINE__BATCH_WITHIN_S": "0.1",
        },
    )
    run.create_topics(partitions=4)
    rss: dict[str, float] = {}
    try:
        run.start_worker(log_dir)
        run.wait_healthy(timeout=180)
        ids = [f"{run.suffix}-{i}" for i in range(len(texts))]
        sent_at: dict[str, float] = {}
        messages = []
        now = time.time()
        for event_id, text in zip(ids, texts, strict=True):
            title, _, body = text.partition(". ")
            doc = {"id": event_id, "timestamp": now, "source": "bench", "title": title, "body": body}
            messages.append((event_id, json.dumps(doc).encode()))
        started = time.time()
        settings = run.settings
        producer = threading.Thread(
            target=lambda: asyncio.run(_produce_paced(settings, run.topics.news, messages, rate, sent_at)),
            daemon=True,
        )
        producer.start()
        seen: dict[str, float] = {}
        client = clickhouse()
        deadline = time.time() + 900
        while len(seen) < len(ids) and time.time() < deadline:
            rows = client.execute(
                "SELECT event_id FROM labels WHERE event_id LIKE %(p)s", {"p": f"{run.suffix}-%"}
            )
            t = time.time()
            for (event_id,) in rows:
                seen.setdefault(event_id, t)
            if len(seen) < len(ids):
                time.sleep(poll)
        finished = max(seen.values()) if seen else time.time()
        producer.join(timeout=60)
        produced = max(sent_at.values()) if sent_at else started
        for proc, _, _ in run.workers:
            rss[f"worker:{proc.pid}"] = round(psutil.Process(proc.pid).memory_info().rss / 2**20, 1)
    finally:
        run.stop()
    latencies = [seen[i] - sent_at[i] for i in seen]
    elapsed = finished - started
    return {
        "batch": batch,
        "rate": rate,
        "events": len(ids),
        "stored": len(seen),
        "produce_s": round(produced - started, 3),
        "seconds": round(elapsed, 3),
        "events_per_s": round(len(seen) / elapsed, 2) if elapsed > 0 else 0.0,
        "latency_p50_s": round(_percentile(latencies, 0.5), 3) if latencies else None,
        "latency_p99_s": round(_percentile(latencies, 0.99), 3) if latencies else None,
        "latency_mean_s": round(statistics.fmean(latencies), 3) if latencies else None,
        "worker_rss_mib": rss,
        "note": "latency = send -> first poll seeing the row; unpaced runs include queueing",
    }


def stack_rss() -> dict[str, float]:
    """RSS in MiB of Kafka, ClickHouse and Triton (with children) and of this process."""
    s = get_settings()
    ports = {s.kafka.port: "kafka", s.clickhouse.port: "clickhouse", s.triton.grpc_port: "triton"}
    found: dict[str, float] = {}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port in ports and conn.pid:
            try:
                proc = psutil.Process(conn.pid)
                total = proc.memory_info().rss + sum(
                    c.memory_info().rss for c in proc.children(recursive=True)
                )  # triton's python-backend stubs are children
                found[ports[conn.laddr.port]] = round(total / 2**20, 1)
            except psutil.Error:
                continue
    found["bench"] = round(psutil.Process().memory_info().rss / 2**20, 1)
    return found


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, write pipeline_bench.json and .md under ``--out``; returns the result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=600, help="events for the batched run")
    parser.add_argument("--per-event-events", type=int, default=60, help="events for the batch-size-1 run")
    parser.add_argument("--paced-events", type=int, default=60, help="events for the paced latency run")
    parser.add_argument("--paced-fraction", type=float, default=0.5, help="paced rate as a share of raw")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=1, help="raw model: calls in flight")
    parser.add_argument("--poll", type=float, default=0.2, help="ClickHouse poll interval (s)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = get_settings().run_dir / "bench-logs"  # worker logs stay out of the results folder
    log_dir.mkdir(parents=True, exist_ok=True)
    texts = _texts(max(args.events, args.per_event_events))
    with served_model("news_topic") as served:
        raw = asyncio.run(raw_throughput(served.name, texts[: args.events], args.batch, args.concurrency))
        raw_single = asyncio.run(raw_throughput(served.name, texts[: args.per_event_events], 1, 1))
        batched = pipeline_run(
            served, texts[: args.events], batch=args.batch, poll=args.poll, log_dir=log_dir
        )
        single = pipeline_run(
            served, texts[: args.per_event_events], batch=1, poll=args.poll, log_dir=log_dir
        )
        rate = round(raw["texts_per_s"] * args.paced_fraction, 2)
        paced = pipeline_run(
            served, texts[: args.paced_events], batch=args.batch, poll=args.poll, log_dir=log_dir, rate=rate
        )
        rss = stack_rss()
    p1 = batched["events_per_s"] / raw["texts_per_s"] if raw["texts_per_s"] else 0.0
    p2 = batched["events_per_s"] / single["events_per_s"] if single["events_per_s"] else 0.0
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": psutil.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m": round(psutil.getloadavg()[0], 2),
        },
        "batch": args.batch,
        "model": {"task": served.task, "triton_model": served.name, "version": served.version},
        "raw_model": raw,
        "raw_model_per_event": raw_single,
        "raw_batched_over_per_event": round(raw["texts_per_s"] / raw_single["texts_per_s"], 2),
        "pipeline_batched": batched,
        "pipeline_per_event": single,
        "pipeline_paced": paced,
        "P1_end_to_end_over_raw": round(p1, 3),
        "P1_target": 0.9,
        "P2_batched_over_per_event": round(p2, 2),
        "P2_target": 10,
        "rss_mib": {
            **rss,
            **batched["worker_rss_mib"],
            **single["worker_rss_mib"],
            **paced["worker_rss_mib"],
        },
    }
    (args.out / "pipeline_bench.json").write_text(json.dumps(result, indent=2))
    (args.out / "pipeline_bench.md").write_text(markdown(result))
    print(markdown(result))
    return result


def markdown(r: dict[str, Any]) -> str:
    """The results table and figures of merit as Markdown."""
    b, s, raw, pc = r["pipeline_batched"], r["pipeline_per_event"], r["raw_model"], r["pipeline_paced"]
    lines = [
        f"# Pipeline benchmark ({r['when']})",
        "",
        f"Model `{r['model']['triton_model']}` v{r['model']['version']} ({r['model']['task']}), "
        f"{r['machine']['cpus']} CPUs, load {r['machine']['load_avg_1m']} at the end.",
        "",
        "| run | events | events/s | p50 latency (s) | p99 latency (s) |",
        "|---|---:|---:|---:|---:|",
        f"| raw model (Triton, batch {r['batch']}) | {raw['texts']} | {raw['texts_per_s']} | | |",
        f"| raw model (Triton, batch 1) | {r['raw_model_per_event']['texts']} | "
        f"{r['raw_model_per_event']['texts_per_s']} | | |",
        f"| pipeline, batch {b['batch']} | {b['stored']}/{b['events']} | {b['events_per_s']} | "
        f"{b['latency_p50_s']} | {b['latency_p99_s']} |",
        f"| pipeline, batch 1 | {s['stored']}/{s['events']} | {s['events_per_s']} | "
        f"{s['latency_p50_s']} | {s['latency_p99_s']} |",
        f"| pipeline, batch {pc['batch']}, paced {pc['rate']}/s | {pc['stored']}/{pc['events']} | "
        f"{pc['events_per_s']} | {pc['latency_p50_s']} | {pc['latency_p99_s']} |",
        "",
        f"- P1 = end-to-end / raw = **{r['P1_end_to_end_over_raw']}** (target >= {r['P1_target']})",
        f"- P2 = batched / per-event = **{r['P2_batched_over_per_event']}** (target >= {r['P2_target']}); "
        f"the model alone gains {r['raw_batched_over_per_event']}x from batching on this machine",
        "",
        "RSS (MiB): " + ", ".join(f"{k} {v}" for k, v in r["rss_mib"].items()),
        "",
        f"Latency: {b['note']}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
