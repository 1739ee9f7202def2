"""Label-efficiency benchmark: active against random labelling, and a class nobody declared.

``python -m bench.labels_bench [--quick] [--seed N] [--budget F] [--new-class-share F]`` writes
``bench/results/labels_bench.json`` and a chart ``labels_bench.png`` (``--quick``: ``labels_bench_quick``;
another ``--new-class-share``: ``labels_bench_share<F>``). Scenarios and keys: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.charts import Panel, bar_pair
from driftline.apps.testing.harness import unique_suffix
from driftline.settings import Topics

RESULTS = Path(__file__).parent / "results"
SCENARIOS: dict[str, list[str]] = {
    "random": ["--labeler", "random"],
    "active": ["--labeler", "active"],
    "open_taxonomy": ["--labeler", "active", "--open-taxonomy"],
}
SHARE = 0.15  # the default run's new-class share of the shifted stream
TARGETS = {"active_label_ratio_max": 0.5, "recovery_ratio_min": 0.95, "open_taxonomy_recovery_min": 0.9}


def run_scenario(
    name: str,
    args: list[str],
    *,
    quick: bool,
    seed: int,
    budget: float | None,
    out: Path,
    share: float | None = None,
) -> dict[str, Any]:
    """One demo run on topics of its own; its headline numbers (or why it failed).

    ``budget`` None: the preset's label budget; ``share`` None: the preset's new-class share.
    """
    suffix = unique_suffix()
    env = dict(os.environ, DRIFTLINE_PIPELINE__APP_ID=f"bench-labels-{suffix}", COLUMNS="120")
    for topic in Topics.model_fields:
        env[f"DRIFTLINE_KAFKA__TOPICS__{topic.upper()}"] = f"bench.labels.{suffix}.{topic}"
    run_dir = out / name
    cmd = [
        *(sys.executable, "-m", "driftline.apps.cli", "demo", "--no-dashboard", "--seed", str(seed)),
        *(("--label-budget", str(budget)) if budget is not None else ()),
        *(("--new-class-share", str(share)) if share is not None else ()),
        *("--run-dir", str(run_dir), *args),
        *(["--quick"] if quick else []),
    ]
    started = time.monotonic()
    with (out / f"{name}.log").open("w", encoding="utf-8") as log:
        code = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    seconds = round(time.monotonic() - started, 1)
    headline_file = run_dir / "headline.json"
    if code != 0 or not headline_file.is_file():
        return {"ok": False, "exit_code": code, "seconds": seconds, "log": str(out / f"{name}.log")}
    row = row_of(json.loads(headline_file.read_text(encoding="utf-8")))
    return {**row, "seconds": seconds, "run_dir": str(run_dir)}


def row_of(h: dict[str, Any]) -> dict[str, Any]:
    """The figures of one run, from its ``headline.json``."""
    return {
        "ok": True,
        "decision": h["decision"],
        "decision_reason": h["decision_reason"],
        "fit": h.get("decision_fit") or None,
        "labels_to_promotion": h["labels_to_decision"],
        "labels_until_served": h["labels_shift_to_promotion"],
        "labels_total_to_promotion": h["labels_to_promotion"],
        "events_to_promotion": h["promotion_delay_events"],
        "recovery_ratio": h["recovery_ratio"],
        "pre_shift_accuracy": h["pre_shift_accuracy"],
        "drop_accuracy": h["drop_accuracy"],
        "recovered_accuracy": h["recovered_accuracy"],
        "new_class_accuracy_before": h["new_class_accuracy_before"],
        "new_class_accuracy_after": h["new_class_accuracy_after"],
        "feedback_sent": h["feedback_sent"],
        "detection_delay_events": h["detection_delay_events"],
    }


def assemble(results: dict[str, dict[str, Any]], *, quick: bool, seed: int, budget: float) -> dict[str, Any]:
    """The ``labels_bench.json`` document: one entry per scenario, the ratio, the targets."""
    report: dict[str, Any] = {**results, "quick": quick, "seed": seed, "label_budget": budget,
                              "targets": TARGETS}  # fmt: skip
    random_labels = results.get("random", {}).get("labels_to_promotion")
    active_labels = results.get("active", {}).get("labels_to_promotion")
    promoted = all(results.get(n, {}).get("decision") == "promoted" for n in ("random", "active"))
    report["active_label_ratio"] = (
        round(active_labels / random_labels, 3)
        if promoted and random_labels and active_labels is not None
        else None
    )
    return report


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Labels to promotion and recovery ratio per scenario, side by side."""
    names = list(results)
    bar_pair(
        path,
        names,
        Panel([results[n].get("labels_to_promotion") or 0 for n in names],
              "labels from the shift until the promoting update"),
        Panel([results[n].get("recovery_ratio") or 0 for n in names], "recovery ratio", "#55a868",
              target=0.95, ylim=(0, 1.1)),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the scenarios, print the table, write the JSON and the chart; return the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick demo preset (small slices)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=None, help="label budget (default 0.2 quick, 0.15)")
    parser.add_argument("--only", choices=list(SCENARIOS), action="append", help="run only these")
    parser.add_argument(
        "--new-class-share", type=float, default=None,
        help=f"share of the shifted stream that is the new class (default {SHARE}; --quick: the quick "
        "preset's); another share writes labels_bench_share<F>.json, beside the default scenario's",
    )  # fmt: skip
    args = parser.parse_args(argv)
    budget = args.budget or (0.2 if args.quick else 0.15)
    share = args.new_class_share if args.new_class_share is not None else (None if args.quick else SHARE)
    console = Console()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "labels_runs" / time.strftime("%Y%m%dT%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    for name in args.only or list(SCENARIOS):
        console.print(
            f"[bold]{name}[/]: demo {'--quick ' if args.quick else ''}seed {args.seed}, budget {budget}"
        )
        results[name] = run_scenario(
            name, SCENARIOS[name], quick=args.quick, seed=args.seed, budget=budget, out=out,
            share=share,
        )  # fmt: skip
        console.print(
            f"  {name}: {json.dumps({k: v for k, v in results[name].items() if k != 'decision_reason'})}"
        )
    report = assemble(results, quick=args.quick, seed=args.seed, budget=budget)
    report["new_class_share"] = share  # None: the quick preset's
    stem = "labels_bench_quick" if args.quick else "labels_bench"
    if args.new_class_share is not None and args.new_class_share != SHARE:
        stem = f"labels_bench_share{args.new_class_share}"
    table = Table(
        title=f"labels_bench ({'quick' if args.quick else 'default'} demo, seed {args.seed}, budget {budget})"
    )
    for column in ("scenario", "decision", "labels shift->promotion", "events shift->promotion", "recovery",
                   "new class after"):  # fmt: skip
        table.add_column(column)
    for name, r in results.items():
        table.add_row(name, str(r.get("decision", "failed")), str(r.get("labels_to_promotion")),
                      str(r.get("events_to_promotion")), str(r.get("recovery_ratio")),
                      str(r.get("new_class_accuracy_after")))  # fmt: skip
    console.print(table)
    if report["active_label_ratio"] is not None:
        console.print(f"active / random labels to promotion: {report['active_label_ratio']}")
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    plot(results, RESULTS / f"{stem}.png")
    console.print(f"wrote {RESULTS / f'{stem}.json'} and {stem}.png")
    return report


if __name__ == "__main__":
    main()
