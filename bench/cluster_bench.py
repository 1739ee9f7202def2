"""Cluster benchmark: the pipeline on the three-broker TLS cluster vs the single broker, and a broker kill.

Needs the local stack: ``python -m bench.cluster_bench [--quick] [--events N] [--workers 2] [--rate 6]``
writes ``bench/results/cluster_bench.json`` and prints a table. Method and keys: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from driftline.apps.testing.cluster import broker_kill, news_texts, pipeline, start_cluster, throughput  # noqa: E402
from driftline.apps.testing.harness import served_model  # noqa: E402
from driftline.settings import get_settings  # noqa: E402

RESULTS_DIR = REPO_ROOT / "bench" / "results"
console = Console()


def run_bench(
    *,
    events: int,
    workers: int,
    rate: float,
    before_s: float,
    down_s: float,
    after_s: float,
    progress: Progress,
) -> dict[str, Any]:
    """Measure the three phases; returns the report (without machine details)."""
    log_dir = get_settings().run_dir / "bench-logs"  # worker logs stay out of the results folder
    log_dir.mkdir(parents=True, exist_ok=True)
    texts = news_texts(events)
    bar = progress.add_task("cluster bench", total=5)

    def step(message: str) -> None:
        progress.console.print(message, highlight=False)

    report: dict[str, Any] = {}
    with served_model("news_topic") as served:
        report["model"] = {"task": served.task, "triton_model": served.name, "version": served.version}
        progress.advance(bar)
        step(f"single broker: {workers} workers, {events} events")
        with pipeline(served, log_dir, workers=workers) as run:
            report["single_broker"] = throughput(run, texts)
        step(f"single broker: {report['single_broker']}")
        progress.advance(bar)
        with (
            tempfile.TemporaryDirectory(prefix="driftline-cluster-") as tmp,
            start_cluster(Path(tmp) / "run") as cluster,
        ):
            report["cluster_up_s"] = round(cluster.up_seconds, 1)
            step(f"TLS cluster up in {cluster.up_seconds:.1f}s: {workers} workers, {events} events")
            progress.advance(bar)
            with pipeline(served, log_dir, base_env=cluster.env, workers=workers) as run:
                report["tls_cluster"] = throughput(run, texts)
                step(f"TLS cluster: {report['tls_cluster']}")
                progress.advance(bar)
                kill_texts = news_texts(int(rate * (before_s + down_s + after_s + 120)))
                report["broker_kill"] = broker_kill(
                    run, cluster, kill_texts, rate=rate, before_s=before_s, down_s=down_s, after_s=after_s,
                    progress=step,
                )  # fmt: skip
                progress.advance(bar)
    return report


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures, on top of the report."""
    single = report["single_broker"]["events_per_s"]
    tls = report["tls_cluster"]["events_per_s"]
    kill = report["broker_kill"]
    return {
        "events": kill["events"],
        "lost": kill["lost"],
        "duplicates_final": kill["duplicates_final"],
        "broker_killed": kill["broker_killed"],
        "recovery_s": kill["recovery_s"],
        "tls_cluster_events_per_s": tls,
        "single_broker_events_per_s": single,
        "tls_cluster_ratio": round(tls / single, 3) if single else None,
    }


def table(result: dict[str, Any]) -> Table:
    """The results as a rich table."""
    out = Table(title=f"cluster benchmark ({result['mode']}, {result['machine']['cpus']} CPUs)")
    out.add_column("figure")
    out.add_column("value", justify="right")
    single, tls, kill = result["single_broker"], result["tls_cluster"], result["broker_kill"]
    rows = [
        ("single broker events/s", f"{single['events_per_s']} ({single['labelled']}/{single['events']})"),
        ("TLS cluster events/s", f"{tls['events_per_s']} ({tls['labelled']}/{tls['events']})"),
        ("TLS cluster / single broker", str(result["tls_cluster_ratio"])),
        ("broker kill: events (acks=all)", f"{kill['events']} at {kill['rate_per_s']}/s"),
        ("lost", str(kill["lost"])),
        ("ids with >1 row after merges", str(kill["duplicates_final"])),
        ("raw label rows", str(kill["raw_rows"])),
        ("broker down (kill -> healthy)", f"{kill['broker_down_s']} s"),
        ("recovery (kill -> caught up)", f"{kill['recovery_s']} s ({kill['late_events']} late events)"),
        ("producer send retries", str(kill["producer_send_retries"])),
        ("cluster up", f"{result['cluster_up_s']} s"),
    ]
    for name, value in rows:
        out.add_row(name, value)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, write cluster_bench.json under ``--out``, print the table; returns the result."""
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer events, shorter kill phases")
    parser.add_argument("--events", type=int, default=None, help="throughput events (default 400, quick 120)")
    parser.add_argument("--workers", type=int, default=2, help="workers per pipeline (both stacks)")
    parser.add_argument("--rate", type=float, default=6.0, help="events/s during the broker kill")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    events = args.events or (120 if args.quick else 400)
    phases = (8.0, 5.0, 5.0) if args.quick else (15.0, 10.0, 10.0)
    started = time.monotonic()
    with Progress(console=console) as progress:
        report = run_bench(
            events=events, workers=args.workers, rate=args.rate, before_s=phases[0], down_s=phases[1],
            after_s=phases[2], progress=progress,
        )  # fmt: skip
    result = {
        **summary(report),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": "quick" if args.quick else "default",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        },
        "workers": args.workers,
        "kill_phases_s": dict(zip(("before", "down", "after"), phases, strict=True)),
        **report,
        "total_s": round(time.monotonic() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "cluster_bench.json"
    path.write_text(json.dumps(result, indent=2))
    console.print(table(result))
    console.print(f"written: {path}")
    return result


if __name__ == "__main__":
    main()
