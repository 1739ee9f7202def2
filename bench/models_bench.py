"""Model benchmark: every inference engine of each task's model, on the task's test texts, in-process.

``python -m bench.models_bench [--quick] [--tasks news_topic,chat_sentiment] [--batches 1,8,32,64]``
writes ``bench/results/models_bench.json`` and ``.md`` and prints a table per task. Method, keys and
the engine rule: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.timing import Call, EncodedTexts, encode_texts, engine_call, run_plan
from driftline.models.artifacts import ADAPTER_DIR, HEAD_FILE, META_FILE, read_meta
from driftline.models.engines import ENGINE_NAMES, REFERENCE_ENGINE, EngineMeasure, pick_engine
from driftline.models.tasks import get_task, load_tasks
from driftline.models.text.batching import count_batches, padding_waste, plan_batches
from driftline.models.triton.export import MAX_BATCH_SIZE, ExportError, latest_artifact
from driftline.settings import get_settings

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: arrival-order cells up to this many rows get a warm-up call first (torch's first 1-row call at a new
#: shape took ~1 s on the 2-core machine, most of a cell's budget; bigger calls amortize it)
SMALL_BATCH = 8
console = Console(width=max(Console().width, 130))  # the tables need ~120 columns, also in a log


# ---------------------------------------------------------------- the report (pure)

ACCURACY_TOLERANCE = 0.005
MIN_AGREEMENT = 0.97
EXPLAIN_ROW = "torch-fp32+explain"
ROW_KEYS = ("sentences_per_s", "accuracy", "agreement", "p50_ms", "p99_ms", "calls", "texts")


def chosen_engine(
    rows: Mapping[str, Mapping[str, Any]],
    *,
    accuracy_tolerance: float = ACCURACY_TOLERANCE,
    min_agreement: float = MIN_AGREEMENT,
) -> str | None:
    """The engine export's rule picks from one task's rows; None when torch-fp32 has no measurement."""
    measures = {
        name: EngineMeasure(
            sentences_per_s=row.get("sentences_per_s"),
            accuracy=row.get("accuracy"),
            agreement=row.get("agreement"),
            error=row.get("error"),
        )
        for name, row in rows.items()
        if name in ENGINE_NAMES
    }
    reference = measures.get(REFERENCE_ENGINE)
    if reference is None or reference.error is not None:
        return None
    return pick_engine(measures, accuracy_tolerance=accuracy_tolerance, min_agreement=min_agreement)


def build_result(meta: Mapping[str, Any], tasks: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The JSON document from the measurements of each task.

    ``tasks[task]`` holds ``rows`` (row name -> measurement, keys as in docs/benchmarks.md),
    ``padding_waste`` ({before, after}) and descriptive fields (artifact, artifact_source, texts,
    token_budget, max_batch) copied to ``tasks``.
    """
    engines: dict[str, dict[str, Any]] = {}
    chosen: dict[str, str | None] = {}
    waste: dict[str, dict[str, float]] = {}
    described: dict[str, dict[str, Any]] = {}
    for task, measured in tasks.items():
        rows = measured.get("rows", {})
        engines[task] = {
            name: {
                **{key: row.get(key) for key in ROW_KEYS},
                "by_batch": {str(size): dict(cell) for size, cell in row.get("by_batch", {}).items()},
                "error": row.get("error"),
                "note": row.get("note"),
            }
            for name, row in rows.items()
        }
        chosen[task] = chosen_engine(rows)
        waste[task] = {
            "before": measured["padding_waste"]["before"],
            "after": measured["padding_waste"]["after"],
        }
        described[task] = {k: v for k, v in measured.items() if k not in ("rows", "padding_waste")}
    return {
        "meta": dict(meta),
        "rule": {"accuracy_tolerance": ACCURACY_TOLERANCE, "min_agreement": MIN_AGREEMENT},
        "engines": engines,
        "chosen": chosen,
        "padding_waste": waste,
        "tasks": described,
    }


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table_header(batches: list[int]) -> list[str]:
    """Column names of one task's table."""
    return [
        "engine",
        "sorted/s",
        *[f"b{size}/s" for size in batches],
        "p50 ms",
        "p99 ms",
        "accuracy",
        "agreement",
        "note",
    ]


def table_rows(result: Mapping[str, Any], task: str) -> list[list[str]]:
    """One task's rows as strings, in the order of ``table_header``; the chosen engine is starred."""
    batches = [int(b) for b in result["meta"].get("batches", [])]
    rows: list[list[str]] = []
    for name, row in result["engines"][task].items():
        cells = row.get("by_batch", {})
        note = row.get("error") or row.get("note") or ""
        rows.append(
            [
                f"{name} *" if name == result["chosen"].get(task) else name,
                _fmt(row.get("sentences_per_s")),
                *[_fmt((cells.get(str(size)) or {}).get("sentences_per_s")) for size in batches],
                _fmt(row.get("p50_ms")),
                _fmt(row.get("p99_ms")),
                _fmt(row.get("accuracy"), 3),
                _fmt(row.get("agreement"), 3),
                note[:80],
            ]
        )
    return rows


def markdown(result: Mapping[str, Any]) -> str:
    """The report as Markdown: one table per task, the choice and the padding waste under it."""
    meta = result["meta"]
    batches = [int(b) for b in meta.get("batches", [])]
    header = table_header(batches)
    lines = [
        f"# Model benchmark ({meta.get('started', '')})",
        "",
        f"Mode: {meta.get('mode')}; threads: {meta.get('threads')}; "
        f"token budget: {meta.get('token_budget')}; "
        f"bN: arrival order, batches of N, {meta.get('budget_s')} s of calls per cell. "
        "sorted = length-sorted batches within the token budget (how serving runs); p50/p99 "
        "per call of those. * = chosen by export's rule (fastest within "
        f"{ACCURACY_TOLERANCE * 100:.1f} accuracy points of torch-fp32 and >= {MIN_AGREEMENT} agreement).",
    ]
    for task in result["engines"]:
        info = result["tasks"].get(task, {})
        waste = result["padding_waste"][task]
        lines += [
            "",
            f"## {task}",
            "",
            f"{info.get('texts')} test texts; artifact `{info.get('artifact')}` "
            f"({info.get('artifact_source')}).",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(header) - 2) + ["---"]) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in table_rows(result, task)]
        lines += [
            "",
            f"- chosen: **{result['chosen'][task]}**",
            f"- padding waste: {waste['before']:.1%} (arrival order, batches of 32) -> "
            f"{waste['after']:.1%} (sorted, token budget)",
        ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- measuring


def artifact_for(task: str) -> tuple[Path, str]:
    """The task's latest trained artifact, else the harness's small test artifact; and which it is."""
    try:
        return latest_artifact(task), "latest trained artifact"
    except ExportError:
        from driftline.apps.testing.harness import pipeline_artifact

        return pipeline_artifact(task), "harness test artifact (the task has no trained one)"


@contextmanager
def version_folder(artifact: Path) -> Iterator[Path]:
    """A temporary version folder holding a copy of ``artifact`` (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="models-bench-") as tmp:
        folder = Path(tmp) / "1"
        shutil.copytree(artifact / ADAPTER_DIR, folder / ADAPTER_DIR)
        for name in (HEAD_FILE, META_FILE):
            shutil.copy2(artifact / name, folder / name)
        yield folder


def test_texts(task: str, limit: int | None) -> tuple[list[str], list[str]]:
    """Texts and gold labels of the task's test split, in split order (the first ``limit``)."""
    from driftline.models.datasets import load_dataset

    examples = load_dataset(get_task(task).dataset).split("test")[: limit or None]
    return [e.text for e in examples], [e.label for e in examples]


def explainer_call(folder: Path, texts: list[str], threads: int) -> Call | None:
    """A call running the explanation (forward + backward) on the texts; None without an ``Explainer``."""
    try:
        from driftline.models.explain.explainer import Explainer
    except ImportError:
        return None
    explainer = Explainer(folder, num_threads=threads or None, batch_size=MAX_BATCH_SIZE)

    def call(batch: list[int]) -> None:
        explainer.explain([texts[i] for i in batch])

    return call


@dataclass(frozen=True)
class Budgets:
    """Time limits: seconds of calls per arrival-order cell, and for the explanation row's sorted pass."""

    cell_s: float
    explain_s: float


@dataclass
class Workload:
    """One task's benchmark texts: encoded, planned as serving plans them, with their gold labels."""

    folder: Path
    texts: list[str]
    encoded: EncodedTexts
    plan: list[list[int]]
    batches: list[int]
    threads: int


def measure_row(
    call: Call, work: Workload, budgets: Budgets, advance: Callable[[], None], *, explain: bool = False
) -> tuple[dict[str, Any], np.ndarray | None]:
    """One row: the sorted budget pass and a time-budgeted cell per arrival-order batch size.

    An engine's sorted pass covers every text (its labels give accuracy and agreement). The
    explanation row's pass runs the same batches in a fixed shuffled order for ``budgets.explain_s``
    (its labels are torch's anyway), so the long texts do not all come first.
    """
    n = len(work.texts)
    call(work.plan[0])  # warm-up on the longest batch: first calls allocate
    if explain:
        plan = list(work.plan)
        random.Random(0).shuffle(plan)
        whole = run_plan(call, plan, n, budget_s=budgets.explain_s)
    else:
        whole = run_plan(call, work.plan, n)
    advance()
    row: dict[str, Any] = {**whole.summary(), "by_batch": {}}
    for size in work.batches:
        cells = count_batches(n, size)
        if size <= SMALL_BATCH:
            call(cells[0])  # a first call at a new shape pays one-off set-up a small cell cannot amortize
        row["by_batch"][str(size)] = run_plan(call, cells, n, budget_s=budgets.cell_s).summary()
        advance()
    return row, whole.probs


def measure_named(name: str, work: Workload, budgets: Budgets, advance: Callable[[], None]) -> dict[str, Any]:
    """The row of engine ``name`` (or the explanation row), with its probabilities under ``probs``;
    a row holding only ``error`` (or ``note``) when it cannot load or run."""
    from driftline.models.engines import load_engine

    call: Call | None = None
    try:
        if name == EXPLAIN_ROW:
            call = explainer_call(work.folder, work.texts, work.threads)
            if call is None:
                return {"note": "skipped: driftline.models.explain.explainer is not available"}
        else:
            call = engine_call(load_engine(work.folder, name, work.threads), work.encoded)
        row, probs = measure_row(call, work, budgets, advance, explain=name == EXPLAIN_ROW)
        return {**row, "probs": probs}
    except Exception as exc:  # one engine failing must not end the benchmark: its row says why
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}
    finally:
        del call  # the engine (and its session's memory) goes before the next one loads
        gc.collect()


def measure_task(
    task: str, limit: int | None, batches: list[int], budgets: Budgets, progress: Progress
) -> dict[str, Any]:
    """Every row of one task, its padding waste and what it was measured on."""
    from driftline.models.engines import write_onnx

    settings = get_settings().triton
    artifact, source = artifact_for(task)
    texts, gold = test_texts(task, limit)
    steps = 1 + len(batches)  # per row: the sorted pass and one cell per batch size
    bar = progress.add_task(f"{task}: writing ONNX graphs", total=1 + (len(ENGINE_NAMES) + 1) * steps)
    with version_folder(artifact) as folder:
        started = time.perf_counter()
        write_onnx(folder)
        onnx_write_s = round(time.perf_counter() - started, 1)
        progress.advance(bar)
        labels = list(read_meta(folder).labels)
        encoded = encode_texts(folder, texts)
        lengths = encoded.lengths
        plan = plan_batches(lengths, settings.token_budget, MAX_BATCH_SIZE)
        work = Workload(folder, texts, encoded, plan, batches, settings.torch_threads)
        gold_idx = np.array([labels.index(g) if g in labels else -1 for g in gold])
        rows: dict[str, dict[str, Any]] = {}
        reference: np.ndarray | None = None
        names = [REFERENCE_ENGINE, *(n for n in ENGINE_NAMES if n != REFERENCE_ENGINE), EXPLAIN_ROW]
        for index, name in enumerate(names):
            progress.update(bar, description=f"{task}: {name}")
            row = measure_named(name, work, budgets, lambda: progress.advance(bar))
            progress.update(bar, completed=1 + (index + 1) * steps)
            probs = row.pop("probs", None)
            if probs is not None:
                predicted = probs.argmax(axis=1)
                row["accuracy"] = round(float((predicted == gold_idx).mean()), 4)
                if name == REFERENCE_ENGINE:
                    reference = predicted
                if reference is not None:
                    row["agreement"] = round(float((predicted == reference).mean()), 4)
            elif name == EXPLAIN_ROW and "sentences_per_s" in row and reference is not None:
                row["accuracy"] = rows[REFERENCE_ENGINE].get("accuracy")
                row["agreement"] = 1.0
                row["note"] = (
                    f"labels are torch-fp32's (explanations only); sorted pass: {row['texts']} of "
                    f"{len(texts)} texts in {budgets.explain_s:g} s"
                )
            rows[name] = row
    return {
        "artifact": str(artifact),
        "artifact_source": source,
        "texts": len(texts),
        "onnx_write_s": onnx_write_s,
        "token_budget": settings.token_budget,
        "max_batch": MAX_BATCH_SIZE,
        "padding_waste": {
            "before": round(padding_waste(count_batches(len(lengths), 32), lengths), 4),
            "after": round(padding_waste(plan, lengths), 4),
        },
        "rows": rows,
    }


def print_tables(result: dict[str, Any]) -> None:
    """One rich table per task; notes and errors under it."""
    header = table_header([int(b) for b in result["meta"]["batches"]])[:-1]  # the note goes below
    for task in result["engines"]:
        table = Table(title=f"{task} ({result['tasks'][task]['texts']} texts, * = chosen)")
        for column in header:
            table.add_column(column, justify="left" if column == "engine" else "right")
        for row in table_rows(result, task):
            table.add_row(*row[:-1])
        console.print(table)
        for name, row in result["engines"][task].items():
            if row.get("error") or row.get("note"):
                console.print(f"  {name}: {row.get('error') or row.get('note')}")
        waste = result["padding_waste"][task]
        console.print(
            f"  padding waste: {waste['before']:.1%} arrival order (32) -> {waste['after']:.1%} sorted budget"
        )


def main(argv: list[str] | None = None) -> int:
    """Command line entry point: measure, print the tables, write JSON and Markdown."""
    parser = argparse.ArgumentParser(prog="python -m bench.models_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the first --limit texts, short cells")
    parser.add_argument("--tasks", default=",".join(load_tasks()), help="comma list of tasks")
    parser.add_argument("--batches", default="1,8,32,64", help="comma list of arrival-order batch sizes")
    parser.add_argument("--limit", type=int, default=None, help="texts per task (400; quick 64; 0 = all)")
    parser.add_argument("--budget", type=float, default=None, help="seconds per cell (1.0; quick 0.3)")
    parser.add_argument(
        "--explain-budget", type=float, default=None, help="seconds of the explanation row (15; quick 3)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the torch engine's weight loading would print bars
    tasks = [t for t in args.tasks.split(",") if t]
    batches = [int(b) for b in args.batches.split(",") if b]
    limit = args.limit if args.limit is not None else (64 if args.quick else 400)
    budgets = Budgets(
        cell_s=args.budget if args.budget is not None else (0.3 if args.quick else 1.0),
        explain_s=args.explain_budget if args.explain_budget is not None else (3.0 if args.quick else 15.0),
    )
    triton = get_settings().triton
    meta = {
        "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": "quick" if args.quick else "default",
        "threads": triton.torch_threads,
        "cpus": os.cpu_count(),
        "batches": batches,
        "budget_s": budgets.cell_s,
        "explain_budget_s": budgets.explain_s,
        "token_budget": triton.token_budget,
        "limit": limit,
    }
    measured: dict[str, dict[str, Any]] = {}
    with Progress(console=console) as progress:
        for task in tasks:
            measured[task] = measure_task(task, limit, batches, budgets, progress)
    result = build_result(meta, measured)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "models_bench.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (args.out / "models_bench.md").write_text(markdown(result), encoding="utf-8")
    print_tables(result)
    console.print(f"written: {args.out / 'models_bench.json'} and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
