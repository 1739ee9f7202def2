"""Promotion benchmark: how reliably the quick emerging-class scenario ends in a promotion.

    python -m bench.promotion_bench [--quick] [--seeds N]

Runs ``driftline demo --quick --seed S`` (as a subprocess on topics of its own) for seeds
0 .. N-1 (default 10; ``--quick`` runs the same 10, the demo preset is already the small one) and
counts the runs whose update was promoted: ``quick_demo_promotions``. Per seed it keeps the
decision and its reason, the fit that promoted (head refit or LoRA), the labels and shifted events
until the new version served, and the recovery ratio. Writes ``bench/results/promotion_bench.json``
and a chart ``promotion_bench.png`` (recovery and shifted events per seed).
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
TARGETS = {"quick_demo_promotions_min": 9, "of_seeds": 10}


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
    """Write ``promotion_bench.json`` under ``bench/results``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "promotion_bench.json"
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
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
    parser.add_argument("--quick", action="store_true", help="accepted for symmetry: always the quick demo")
    parser.add_argument("--seeds", type=int, default=TARGETS["of_seeds"])
    args = parser.parse_args(argv)
    console = Console()
    out = RESULTS / "promotion_runs" / time.strftime("%Y%m%dT%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[int, dict[str, Any]] = {}
    with Progress(console=console) as progress:
        bar = progress.add_task("quick demo seeds", total=args.seeds)
        for seed in range(args.seeds):
            runs[seed] = run_scenario(f"seed-{seed}", [], quick=True, seed=seed, budget=None, out=out)
            progress.console.print(
                f"seed {seed}: {runs[seed].get('decision', 'failed')}, "
                f"recovery {runs[seed].get('recovery_ratio')}, fit {runs[seed].get('fit')}"
            )
            progress.advance(bar)
            save(assemble(runs))  # after every seed: a run that is stopped still leaves its count
    report = assemble(runs)
    table = Table(title=f"promotion_bench: quick demo, seeds 0..{args.seeds - 1}")
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
