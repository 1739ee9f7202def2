"""Promotion benchmark: how reliably the quick emerging-class scenario ends in a promotion.

    python -m bench.promotion_bench [--quick] [--seeds N] [--parts demos,rescore]

``demos``: runs ``driftline demo --quick --seed S`` (as a subprocess on topics of its own) for
seeds 0 .. N-1 (default 10; ``--quick`` runs the same 10, the demo preset is already the small one)
and counts the runs whose update was promoted: ``quick_demo_promotions``. Per seed it keeps the
decision and its reason, the fit that promoted (head refit or LoRA), the labels and shifted events
until the new version served, and the recovery ratio; a chart ``promotion_bench.png`` shows
recovery and shifted events per seed.

``rescore``: ``rescore_events_per_s_ratio``, re-scoring from Kafka retention against the engine's
raw throughput on the same texts (``bench.rescore_timing``; 2,000 events, 500 with ``--quick``).

``shadow``: ``shadow_cpu_overhead``, worker CPU per event with a 10 % mirror to a shadow version ÷
without (``bench.shadow_timing``; 1,000 events, 300 with ``--quick``).

``rollback``: ``rollback_labels_to_detect``, labelled events after a planted bad promotion until the
post-promotion watch rolls it back (the worst of 20 orders; ``bench.rollback_timing``).

``estimate``: ``estimate_abs_error``, label-free accuracy estimates (CBPE after temperature
scaling) against measured accuracy per window, stationary and shifted (``bench.estimate_timing``).

Writes ``bench/results/promotion_bench.json``; a run of some parts keeps the other parts' keys.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.charts import Panel, bar_pair
from bench.labels_bench import run_scenario

RESULTS = Path(__file__).parent / "results"
TARGETS = {
    "quick_demo_promotions_min": 9,
    "of_seeds": 10,
    "rescore_events_per_s_ratio_min": 0.8,
    "estimate_abs_error_max": 0.05,
    "rollback_labels_to_detect_max": 100,
    "shadow_cpu_overhead_max": 1.1,
}


def assemble(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The ``promotion_bench.json`` document: the promotion count over the seeds, and each run."""
    promoted = [seed for seed, run in runs.items() if run.get("decision") == "promoted"]
    recoveries = [runs[s]["recovery_ratio"] for s in promoted if runs[s].get("recovery_ratio") is not None]
    return {
        "quick_demo_promotions": len(promoted),
        "quick_demo_seeds": len(runs),
        "quick_demo_promoted_seeds": promoted,
        "quick_demo_min_recovery": min(recoveries) if recoveries else None,
        "runs": {str(seed): run for seed, run in runs.items()},
        "targets": TARGETS,
    }


def save(report: dict[str, Any]) -> Path:
    """Merge ``report`` into ``promotion_bench.json`` under ``bench/results`` (other parts' keys stay)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "promotion_bench.json"
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    path.write_text(json.dumps({**old, **report}, indent=2), encoding="utf-8")
    return path


def plot(runs: dict[int, dict[str, Any]], path: Path) -> None:
    """Recovery ratio and shifted events until the new version served, per seed."""
    seeds = list(runs)
    colors = ["#55a868" if runs[s].get("decision") == "promoted" else "#c44e52" for s in seeds]
    bar_pair(
        path,
        [str(s) for s in seeds],
        Panel([runs[s].get("recovery_ratio") or 0 for s in seeds], "recovery per seed (red: not promoted)",
              colors, target=0.95, ylim=(0, 1.1)),
        Panel([runs[s].get("events_to_promotion") or 0 for s in seeds],
              "shifted events until the new version served", colors),
        xlabel="seed",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the seeds with a progress bar, print the table, write the JSON and the chart."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="500 rescore events instead of 2,000 (the demos are always the quick demo)",
    )
    parser.add_argument("--seeds", type=int, default=TARGETS["of_seeds"])
    parser.add_argument(
        "--parts",
        default="shadow,rollback,estimate,rescore,demos",
        help="comma-separated: estimate, rescore, demos",
    )
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    console = Console()
    report: dict[str, Any] = {}
    if "rescore" in parts:
        from bench.rescore_timing import measure_rescore

        console.print("rescore: measuring against the engine's raw throughput ...")
        report.update(measure_rescore(500 if args.quick else 2000))
        console.print(f"rescore: {report}")
        save({**report, "targets": TARGETS})
    if "shadow" in parts:
        from bench.shadow_timing import measure_shadow

        console.print("shadow: worker CPU with a 10 % mirror and without ...")
        report.update(measure_shadow(300 if args.quick else 1000))
        console.print(f"shadow: {report}")
        save({**report, "targets": TARGETS})
    if "rollback" in parts:
        from bench.rollback_timing import measure_rollback

        console.print("rollback: labels until a planted bad promotion is rolled back ...")
        report.update(measure_rollback())
        console.print(f"rollback: {report}")
        save({**report, "targets": TARGETS})
    if "estimate" in parts:
        from bench.estimate_timing import measure_estimate

        console.print("estimate: CBPE against measured accuracy per window ...")
        report.update(measure_estimate())
        console.print(f"estimate: {report}")
        save({**report, "targets": TARGETS})
    if "demos" in parts:
        report.update(run_demos(args.seeds, console))
    return report


def run_demos(seeds: int, console: Console) -> dict[str, Any]:
    """The quick demo over ``seeds`` seeds: run, print, save after each, chart."""
    out = RESULTS / "promotion_runs" / time.strftime("%Y%m%dT%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[int, dict[str, Any]] = {}
    with Progress(console=console) as progress:
        bar = progress.add_task("quick demo seeds", total=seeds)
        for seed in range(seeds):
            runs[seed] = run_scenario(f"seed-{seed}", [], quick=True, seed=seed, budget=None, out=out)
            progress.console.print(
                f"seed {seed}: {runs[seed].get('decision', 'failed')}, "
                f"recovery {runs[seed].get('recovery_ratio')}, fit {runs[seed].get('fit')}"
            )
            progress.advance(bar)
            save(assemble(runs))  # after every seed: a run that is stopped still leaves its count
    report = assemble(runs)
    table = Table(title=f"promotion_bench: quick demo, seeds 0..{seeds - 1}")
    for column in ("seed", "decision", "fit", "labels to decision", "events to served", "recovery"):
        table.add_column(column)
    for seed, r in runs.items():
        table.add_row(str(seed), str(r.get("decision", "failed")), str(r.get("fit")),
                      str(r.get("labels_to_promotion")), str(r.get("events_to_promotion")),
                      str(r.get("recovery_ratio")))  # fmt: skip
    console.print(table)
    console.print(f"quick_demo_promotions: {report['quick_demo_promotions']} of {report['quick_demo_seeds']}")
    save(report)
    plot(runs, RESULTS / "promotion_bench.png")
    console.print(f"wrote {RESULTS / 'promotion_bench.json'} and promotion_bench.png")
    return report


if __name__ == "__main__":
    main()
