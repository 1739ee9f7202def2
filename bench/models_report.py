"""The model benchmark's report: its JSON document, the engine the export rule picks, and its tables.

``bench.models_bench`` measures; everything here is a pure function of those measurements, so the
shape of ``bench/results/models_bench.json`` (what the README, the integrator and tests read) is
fixed in one place and checked without running a model (tests/test_bench_contract.py).

The document::

    meta                   when, mode, threads, batch sizes, token budget, time budget per cell
    engines[task][row]     sentences_per_s (length-sorted token-budget batches: how serving runs),
                           accuracy (vs gold), agreement (labels equal to torch-fp32's),
                           p50_ms / p99_ms (per call, same batches), calls, texts,
                           by_batch["1"|"8"|"32"|"64"] (arrival order, fixed count: sentences_per_s,
                           p50_ms, p99_ms, calls, texts), error, note
    chosen[task]           what export's rule picks from these measurements (below)
    padding_waste[task]    {before: arrival-order batches of 32, after: the sorted budget plan}
    tasks[task]            artifact, where it came from, texts, token budget, max batch
    rule                   the rule's bounds

A row is an engine name (``driftline.models.engines.ENGINE_NAMES``) or ``torch-fp32+explain``: what
serving did before engines, a forward and the explanation's backward pass per batch.

The rule is export's (``driftline.models.engines.pick_engine``): the fastest engine whose accuracy is
within 0.5 points of torch-fp32's and whose label agreement with it is at least 0.97; torch-fp32 when
none qualifies. Rows that are not engines (the explanation row) and rows with an error never qualify.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from driftline.models.engines import ENGINE_NAMES, REFERENCE_ENGINE, EngineMeasure, pick_engine

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

    ``tasks[task]`` holds ``rows`` (row name -> measurement, keys as in the module docstring),
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
