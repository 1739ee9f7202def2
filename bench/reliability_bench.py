"""Reliability figures: robustness to character noise, faults survived, inputs tried, events lost.

``python -m bench.reliability_bench [--tasks news_topic,chat_sentiment] [--n 150] [--skip-robustness]
[--run-tests]`` writes ``bench/results/reliability_<time>.json`` and ``.md`` and prints the tables.
Method and keys: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RUNS_DIR = RESULTS_DIR / "reliability_runs"
NOISE_KINDS = ("typos", "homoglyphs", "fullwidth", "zero_width", "control", "visual", "mixed")
#: noises normalization is expected to undo (typos change the letters themselves)
NORMALIZABLE = ("homoglyphs", "fullwidth", "zero_width", "control", "visual")


def record_run(kind: str, figures: dict[str, Any], directory: Path | None = None) -> Path:
    """Called by the reliability stack tests: store one run's figures for the report."""
    directory = directory or Path(os.environ.get("DRIFTLINE_RELIABILITY_RUNS", RUNS_DIR))
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{kind}_{stamp}_{os.getpid()}.json"
    path.write_text(json.dumps({"kind": kind, "recorded_at": stamp, **figures}, indent=2, default=str))
    return path


def latest_runs(directory: Path = RUNS_DIR) -> dict[str, dict[str, Any]]:
    """The newest record of each run kind (faults, hostile ...) found in ``directory``."""
    latest: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        latest[data.get("kind", path.stem)] = data  # sorted by name: the newest stamp wins
    return latest


# --- robustness ---------------------------------------------------------------------------------------


def robustness_artifact(task_name: str, *, small: bool = False) -> tuple[Path, str]:
    """The classifier ``driftline train TASK`` makes (the task's full recipe), trained once and cached;
    ``small``: a quick recipe (48 per class, 48 steps) for tests."""
    from driftline.models.cache import get_or_train
    from driftline.models.tasks import get_task
    from driftline.settings import get_settings

    task = get_task(task_name)
    if small:
        root = get_settings().cache_dir / "robustness-artifacts" / task_name
        result = get_or_train(task, limit=48, max_steps=48, max_length=64, batch_size=16, root=root)
        return result.artifact_dir, "small recipe" + (" (cached)" if result.reused else "")
    result = get_or_train(task, progress=True)
    return result.artifact_dir, "driftline train recipe" + (" (cached)" if result.reused else "")


#: the small recipe the augmentation comparison trains twice (same data and steps, noise or not)
AUGMENT_RECIPE = {"limit": 100, "max_steps": 120, "max_length": 96}
AUGMENT_FRACTION = 0.5


def measure_augmentation(task_name: str, *, n: int = 150, seed: int = 0) -> dict[str, Any]:
    """Typo drop of the same small recipe trained without and with noise augmentation.

    Normalization cannot undo typos; training on noisy copies (``train.augment_fraction``) can teach
    the model to read through them. Both models normalize their input, as serving does.
    """
    from driftline.models.cache import get_or_train
    from driftline.models.classifier import load_classifier
    from driftline.models.tasks import get_task
    from driftline.models.text.noise import perturb
    from driftline.models.training import evaluate
    from driftline.settings import get_settings

    task = get_task(task_name)
    root = get_settings().cache_dir / "robustness-artifacts" / task_name
    examples = sample_test(task_name, n, seed)
    figures: dict[str, Any] = {"task": task_name, "n": len(examples), "recipe": AUGMENT_RECIPE}
    for name, fraction in (("plain", 0.0), ("augmented", AUGMENT_FRACTION)):
        variant = task.model_copy(
            update={"train": task.train.model_copy(update={"augment_fraction": fraction})}
        )
        result = get_or_train(variant, root=root, progress=True, **AUGMENT_RECIPE)  # type: ignore[arg-type]
        model = load_classifier(result.artifact_dir)
        model.normalize_input = True

        def accuracy(kind: str | None, model=model) -> float:
            batch = [e if kind is None else dataclasses.replace(e, text=perturb(e.text, kind, seed=seed))
                     for e in examples]  # fmt: skip
            return float(evaluate(model, batch, max_length=AUGMENT_RECIPE["max_length"])["accuracy"])

        clean = accuracy(None)
        row: dict[str, Any] = {"augment_fraction": fraction, "clean": round(clean, 4)}
        for kind in ("typos", "mixed"):
            noisy = accuracy(kind)
            row[kind] = {"noisy": round(noisy, 4), "drop": round(clean - noisy, 4)}
        figures[name] = row
    for kind in ("typos", "mixed"):
        before, after = figures["plain"][kind]["drop"], figures["augmented"][kind]["drop"]
        figures[f"{kind}_drop_reduction"] = round(1 - after / before, 3) if before > 0.005 else None
    return figures


def sample_test(task_name: str, n: int, seed: int = 0) -> list[Any]:
    """A seeded random sample of ``n`` test-split examples of a task's dataset."""
    from driftline.models.datasets import load_dataset
    from driftline.models.tasks import get_task

    examples = list(load_dataset(get_task(task_name).dataset).split("test"))
    random.Random(seed).shuffle(examples)
    return examples[:n]


def measure_robustness(
    task_name: str,
    *,
    n: int = 150,
    kinds: tuple[str, ...] = NOISE_KINDS,
    seed: int = 0,
    max_length: int = 128,
    small: bool = False,
) -> dict[str, Any]:
    """Accuracy clean / noisy / noisy+normalized for every noise kind on ``n`` test examples."""
    from driftline.models.classifier import load_classifier
    from driftline.models.text.noise import perturb
    from driftline.models.training import evaluate

    artifact, origin = robustness_artifact(task_name, small=small)
    model = load_classifier(artifact)
    examples = sample_test(task_name, n, seed)

    def accuracy(texts: list[str], normalized: bool = False) -> float:
        # the same weights with the input normalization off ("before") and on ("after"), whatever
        # the artifact was trained with (``normalize_input`` in its meta is what serving applies)
        model.normalize_input = normalized
        batch = [dataclasses.replace(e, text=t) for e, t in zip(examples, texts, strict=True)]
        return float(evaluate(model, batch, max_length=max_length)["accuracy"])

    clean = [e.text for e in examples]
    started = time.perf_counter()
    figures: dict[str, Any] = {"task": task_name, "artifact": str(artifact), "artifact_origin": origin}
    figures["n"] = len(examples)
    with Progress(transient=True) as progress:
        bar = progress.add_task(f"robustness {task_name}", total=2 + 2 * len(kinds))
        figures["clean"] = accuracy(clean)
        progress.advance(bar)
        figures["clean_normalized"] = accuracy(clean, normalized=True)
        progress.advance(bar)
        noise: dict[str, Any] = {}
        for kind in kinds:
            noisy = [perturb(t, kind, seed=seed) for t in clean]
            changed = sum(a != b for a, b in zip(clean, noisy, strict=True)) / len(clean)
            acc_noisy = accuracy(noisy)
            progress.advance(bar)
            acc_fixed = accuracy(noisy, normalized=True)
            progress.advance(bar)
            drop, drop_after = figures["clean"] - acc_noisy, figures["clean"] - acc_fixed
            noise[kind] = {
                "texts_changed": round(changed, 3),
                "noisy": round(acc_noisy, 4),
                "noisy_normalized": round(acc_fixed, 4),
                "drop": round(drop, 4),
                "drop_normalized": round(drop_after, 4),
                # None when there was (almost) nothing to recover
                "drop_reduction": round(1 - drop_after / drop, 3) if drop > 0.005 else None,
            }
        figures["noise"] = noise
    figures["seconds"] = round(time.perf_counter() - started, 1)
    return figures


# --- report -------------------------------------------------------------------------------------------


def summarize(
    robustness: list[dict[str, Any]], runs: dict[str, dict[str, Any]], augmentation: list[dict[str, Any]] = ()
) -> dict[str, Any]:
    """The headline figures of a report: faults survived, inputs tried, accuracy under noise."""
    faults = runs.get("faults", {})
    hostile = runs.get("hostile", {})
    summary: dict[str, Any] = {
        "faults_injected": faults.get("faults_injected", []),
        "faults_survived": faults.get("faults_survived"),
        "fault_recovery_s": {f["fault"]: f.get("recovered_s") for f in faults.get("faults", [])},
        "workers_crashed": len(faults.get("workers_exited_on_their_own") or []) if faults else None,
        "events_produced": faults.get("events_produced"),
        "events_lost": faults.get("events_lost"),
        "duplicate_label_rows": faults.get("duplicate_label_rows"),
        "retries_seen": faults.get("retries"),
        "bad_inputs_tried": hostile.get("bad_inputs_tried"),
        "bad_inputs_dead_lettered": hostile.get("dead_lettered"),
        "bad_inputs_labelled_text_exact": (
            None if not hostile else hostile.get("labelled", 0) - hostile.get("good_events", 0)
        ),
        "valid_events_dead_lettered": len(hostile.get("good_events_dead_lettered") or {})
        if hostile
        else None,
        "worker_survived_hostile_input": hostile.get("worker_alive_and_healthy"),
        "hostile_inputs_lost": hostile.get("lost"),
        "text_round_trip_mismatches": hostile.get("text_mismatches"),
    }
    for r in robustness:
        for kind, f in r["noise"].items():
            summary[f"{r['task']}.{kind}.drop"] = f["drop"]
            summary[f"{r['task']}.{kind}.drop_normalized"] = f["drop_normalized"]
    for a in augmentation:
        for kind in ("typos", "mixed"):
            summary[f"{a['task']}.{kind}.drop_plain_training"] = a["plain"][kind]["drop"]
            summary[f"{a['task']}.{kind}.drop_augmented_training"] = a["augmented"][kind]["drop"]
    return summary


def markdown(report: dict[str, Any]) -> str:
    """The reliability report as Markdown."""
    lines = [f"# Reliability ({report['created_at']})", ""]
    s = report["summary"]
    lines += ["## Faults and hostile input", "", "| figure | value |", "|---|---|"]
    for key in (
        "faults_injected", "faults_survived", "fault_recovery_s", "workers_crashed", "events_produced",
        "events_lost", "duplicate_label_rows", "retries_seen", "bad_inputs_tried", "bad_inputs_dead_lettered",
        "bad_inputs_labelled_text_exact", "valid_events_dead_lettered", "hostile_inputs_lost",
        "text_round_trip_mismatches", "worker_survived_hostile_input",
    ):  # fmt: skip
        value = s.get(key)
        lines.append(f"| {key} | {'not run' if value is None else value} |")
    for r in report["robustness"]:
        lines += [
            "",
            f"## Robustness: {r['task']} (n={r['n']}, clean accuracy {r['clean']:.3f}, "
            f"clean+normalize {r['clean_normalized']:.3f})",
            "",
            f"artifact: {r['artifact_origin']}",
            "",
            "| noise | texts changed | noisy acc | drop | normalized acc | drop after | drop reduced |",
            "|---|---|---|---|---|---|---|",
        ]
        for kind, f in r["noise"].items():
            reduced = "n/a" if f["drop_reduction"] is None else f"{f['drop_reduction']:.0%}"
            lines.append(
                f"| {kind} | {f['texts_changed']:.0%} | {f['noisy']:.3f} | {f['drop']:+.3f} | "
                f"{f['noisy_normalized']:.3f} | {f['drop_normalized']:+.3f} | {reduced} |"
            )
    for a in report.get("augmentation", []):
        lines += [
            "",
            f"## Noise augmentation in training: {a['task']} (n={a['n']}, recipe {a['recipe']})",
            "",
            "| training | clean acc | typos acc | typos drop | mixed acc | mixed drop |",
            "|---|---|---|---|---|---|",
        ]
        for name in ("plain", "augmented"):
            row = a[name]
            lines.append(
                f"| {name} (augment {row['augment_fraction']}) | {row['clean']:.3f} | "
                f"{row['typos']['noisy']:.3f} | {row['typos']['drop']:+.3f} | "
                f"{row['mixed']['noisy']:.3f} | {row['mixed']['drop']:+.3f} |"
            )
        lines.append(f"\ndrop reduced: typos {a['typos_drop_reduction']}, mixed {a['mixed_drop_reduction']}")
    for kind, run in report["runs"].items():
        lines += ["", f"## Run record: {kind} ({run.get('recorded_at')})", "", "```json"]
        lines += [json.dumps(run, indent=2, default=str)[:4000], "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line entry point: measure, merge the latest runs, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="news_topic,chat_sentiment")
    parser.add_argument("--n", type=int, default=150, help="test examples per task")
    parser.add_argument("--skip-robustness", action="store_true")
    parser.add_argument(
        "--skip-augmentation", action="store_true", help="skip training the augmentation comparison"
    )
    parser.add_argument(
        "--reuse-robustness", action="store_true", help="take the robustness figures of the latest report"
    )
    parser.add_argument("--run-tests", action="store_true", help="run the fault + hostile stack tests first")
    args = parser.parse_args(argv)
    console = Console()
    if args.run_tests:
        cmd = [sys.executable, "-m", "pytest", "-q", "tests/stack/reliability/test_faults.py",
               "tests/stack/reliability/test_hostile.py"]  # fmt: skip
        console.print(f"running {' '.join(cmd[2:])}")
        subprocess.run(cmd, cwd=Path(__file__).resolve().parent.parent, check=False)
    robustness, augmentation = [], []
    tasks = [t for t in args.tasks.split(",") if t]
    previous = sorted(RESULTS_DIR.glob("reliability_2*.json"))
    if args.reuse_robustness and previous:
        last = json.loads(previous[-1].read_text())
        robustness, augmentation = last.get("robustness", []), last.get("augmentation", [])
    elif not args.skip_robustness:
        robustness = [measure_robustness(task, n=args.n) for task in tasks]
        if not args.skip_augmentation:
            augmentation = [measure_augmentation(task, n=args.n) for task in tasks]
    runs = latest_runs()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = {
        "created_at": stamp,
        "summary": summarize(robustness, runs, augmentation),
        "robustness": robustness,
        "augmentation": augmentation,
        "runs": runs,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"reliability_{stamp}"
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
    out.with_suffix(".md").write_text(markdown(report))
    for r in robustness:
        table = Table(title=f"{r['task']}: clean {r['clean']:.3f} (normalized {r['clean_normalized']:.3f})")
        for col in ("noise", "noisy", "drop", "normalized", "drop after"):
            table.add_column(col)
        for kind, f in r["noise"].items():
            table.add_row(kind, f"{f['noisy']:.3f}", f"{f['drop']:+.3f}", f"{f['noisy_normalized']:.3f}",
                          f"{f['drop_normalized']:+.3f}")  # fmt: skip
        console.print(table)
    console.print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
