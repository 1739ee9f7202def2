"""Raw model benchmark: throughput and latency per task, in-process and through Triton.

``python -m bench.models_bench [--quick] [--tasks news_topic,chat_sentiment] [--batches 1,8,32,64]``

For each task and batch size it sends batches of real test-split texts (so lengths and truncation
are realistic) one request at a time and reports sentences/s and per-request latency p50/p99:

- ``local``: ``ClassifierRunner`` in this process (no transport, same maths as Triton);
- ``triton``: ``TritonClient`` -> the task's artifact exported under a unique model name, loaded for
  the run and unloaded afterwards (the served ``news_topic``/``chat_sentiment`` are never touched).

Explanations are on in both (that is what production serves), so figures include the backward pass.
Peak RSS of the Triton server plus its python-backend stub children is sampled during the Triton
runs. Each cell runs for a time budget (at least 2 requests after one warm-up), which keeps the
default run under ~5 minutes on a small CPU box; ``--quick`` shrinks budgets and batch sizes.
Results go to ``bench/results/models_<time>.json`` and ``.md`` (gitignored), and the table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from driftline.models.artifacts import META_FILE
from driftline.models.export import ExportError, export, latest_artifact
from driftline.models.tasks import get_task, load_tasks
from driftline.settings import get_settings

RESULTS_DIR = Path(__file__).resolve().parent / "results"
console = Console()


@dataclass
class Cell:
    """One benchmark cell: throughput and latency of one path at one batch size."""

    task: str
    path: str  # local | triton
    batch: int
    requests: int
    sentences_per_s: float
    p50_ms: float
    p99_ms: float


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _artifact_for(task: str) -> Path:
    """The task's latest trained artifact, else the cached tiny test artifact (speed is the same)."""
    try:
        return latest_artifact(task)
    except ExportError:
        fallback = get_settings().cache_dir / "test-artifacts" / task / "tiny-v1"
        if (fallback / META_FILE).is_file():
            return fallback
        raise


def _texts(task: str, count: int = 256) -> list[str]:
    from driftline.models.datasets import load_dataset

    examples = load_dataset(get_task(task).dataset).split("test")
    texts = [e.text for e in examples[:count]]
    return texts * (count // max(1, len(texts)) + 1) if len(texts) < count else texts


def _measure(run: Callable[[list[str]], object], texts: list[str], batch: int, budget_s: float) -> Cell:
    """Requests of ``batch`` texts until ``budget_s`` is spent: at least 3 for batch <= 8, else 1.

    Large batches on a small shared CPU take seconds each, so insisting on many of them would blow the
    run time; the ``requests`` column says how many samples each p50/p99 rests on.
    """
    latencies: list[float] = []
    minimum = 3 if batch <= 8 else 1
    offset = 0
    start = time.perf_counter()
    while len(latencies) < minimum or time.perf_counter() - start < budget_s:
        chunk = [texts[(offset + i) % len(texts)] for i in range(batch)]
        offset += batch
        t0 = time.perf_counter()
        run(chunk)
        latencies.append((time.perf_counter() - t0) * 1000.0)
    total_s = sum(latencies) / 1000.0
    return Cell("", "", batch, len(latencies), batch * len(latencies) / total_s,
                statistics.median(latencies), _percentile(latencies, 0.99))  # fmt: skip


class RssSampler:
    """Peak RSS of tritonserver (the one serving our gRPC port) and its stub children."""

    def __init__(self, grpc_port: int) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._server = self._find(grpc_port)
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _find(port: int) -> psutil.Process | None:
        for proc in psutil.process_iter(["name", "cmdline"]):
            cmd = " ".join(proc.info.get("cmdline") or [])
            if "tritonserver" in (proc.info.get("name") or "") and f"--grpc-port={port}" in cmd:
                return proc
        return None

    def _loop(self) -> None:
        while not self._stop.is_set() and self._server is not None:
            try:
                procs = [self._server, *self._server.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            self._stop.wait(0.2)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def bench_local(task: str, artifact: Path, batches: list[int], budget_s: float, progress, bar) -> list[Cell]:
    """Cells for in-process inference (``ClassifierRunner``) at each batch size."""
    from driftline.models.serving.runner import ClassifierRunner

    runner = ClassifierRunner(artifact)
    texts = _texts(task)
    runner.predict(texts[:2])  # warm-up: first call allocates
    cells = []
    for batch in batches:
        cell = _measure(lambda chunk: runner.predict(chunk), texts, batch, budget_s)
        cell.task, cell.path = task, "local"
        cells.append(cell)
        progress.advance(bar)
    return cells


def bench_triton(task: str, artifact: Path, batches: list[int], budget_s: float, progress, bar) -> list[Cell]:
    """Cells for ``TritonClient`` against the artifact exported under a unique model name."""
    from driftline.clients import triton_client
    from driftline.models.inference.triton import TritonClient

    settings = get_settings()
    name = f"bench_{task}_{uuid.uuid4().hex[:6]}"
    admin = triton_client(settings)
    texts = _texts(task)
    model_dir = settings.triton.repository / name
    loop = asyncio.new_event_loop()
    client = TritonClient(timeout_s=600.0, retries=0)
    cells = []
    try:
        export(task, artifact, name=name)
        admin.load_model(name)
        loop.run_until_complete(client.predict(name, texts[:2]))  # warm-up
        for batch in batches:
            cell = _measure(
                lambda chunk: loop.run_until_complete(client.predict(name, chunk)), texts, batch, budget_s
            )
            cell.task, cell.path = task, "triton"
            cells.append(cell)
            progress.advance(bar)
    finally:
        loop.run_until_complete(client.close())
        loop.close()
        try:
            admin.unload_model(name)
        finally:
            admin.close()
            shutil.rmtree(model_dir, ignore_errors=True)
    return cells


def markdown(cells: list[Cell], peak_rss: int | None, meta: dict[str, object]) -> str:
    """The benchmark report as a Markdown table."""
    lines = [
        f"# Model benchmark ({meta['started']})",
        "",
        f"Mode: {meta['mode']}; torch threads: {meta['threads']}; explanations on; texts: test split.",
        "",
        "| task | path | batch | requests | sentences/s | p50 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        lines.append(
            f"| {c.task} | {c.path} | {c.batch} | {c.requests} | {c.sentences_per_s:.1f} "
            f"| {c.p50_ms:.1f} | {c.p99_ms:.1f} |"
        )
    if peak_rss is not None:
        lines += ["", f"Peak RSS of tritonserver + python stubs: {peak_rss / 2**20:.0f} MiB"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line entry point: run the benchmark, write JSON and Markdown results."""
    parser = argparse.ArgumentParser(prog="python -m bench.models_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short budgets, batch 1 and 8 only")
    parser.add_argument("--tasks", default=",".join(load_tasks()), help="comma list of tasks")
    parser.add_argument("--batches", default=None, help="comma list of batch sizes (default 1,8,32,64)")
    parser.add_argument("--budget", type=float, default=None, help="seconds per cell (default 6, quick 1.5)")
    parser.add_argument("--no-triton", action="store_true", help="in-process only")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    import torch

    from driftline.models.serving.runner import configure_threads

    configure_threads()
    tasks = [t for t in args.tasks.split(",") if t]
    batches = [int(b) for b in (args.batches or ("1,8" if args.quick else "1,8,32,64")).split(",")]
    budget = args.budget if args.budget is not None else (1.5 if args.quick else 6.0)
    started = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    meta: dict[str, object] = {
        "started": started, "mode": "quick" if args.quick else "default", "threads": torch.get_num_threads(),
        "batches": batches, "budget_s": budget, "triton": get_settings().triton.grpc_url,
    }  # fmt: skip
    cells: list[Cell] = []
    peak_rss: int | None = None
    artifacts = {task: _artifact_for(task) for task in tasks}
    meta["artifacts"] = {task: str(path) for task, path in artifacts.items()}
    paths = 1 if args.no_triton else 2
    with Progress(console=console) as progress:
        bar = progress.add_task("benchmark cells", total=len(tasks) * len(batches) * paths)
        for task in tasks:
            cells += bench_local(task, artifacts[task], batches, budget, progress, bar)
        if not args.no_triton:
            with RssSampler(get_settings().triton.grpc_port) as sampler:
                for task in tasks:
                    cells += bench_triton(task, artifacts[task], batches, budget, progress, bar)
            peak_rss = sampler.peak or None

    args.out.mkdir(parents=True, exist_ok=True)
    report = {"meta": meta, "peak_triton_rss_bytes": peak_rss, "cells": [asdict(c) for c in cells]}
    (args.out / f"models_{started}.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    md = markdown(cells, peak_rss, meta)
    (args.out / f"models_{started}.md").write_text(md, encoding="utf-8")

    table = Table(title=f"models benchmark ({meta['mode']})")
    for column in ("task", "path", "batch", "requests", "sentences/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right" if column not in ("task", "path") else "left")
    for c in cells:
        table.add_row(c.task, c.path, str(c.batch), str(c.requests), f"{c.sentences_per_s:.1f}",
                      f"{c.p50_ms:.1f}", f"{c.p99_ms:.1f}")  # fmt: skip
    console.print(table)
    if peak_rss is not None:
        console.print(f"peak RSS tritonserver + stubs: {peak_rss / 2**20:.0f} MiB")
    console.print(f"written: {args.out / f'models_{started}.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
