"""Promotion benchmark: how reliably the quick emerging-class scenario ends in a promotion.

``python -m bench.promotion_bench [--quick] [--seeds N] [--parts demos,rescore]`` writes
``bench/results/promotion_bench.json`` (a run of some parts keeps the other parts' keys) and a chart
``promotion_bench.png``. What each part measures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.charts import Panel, bar_pair
from bench.labels_bench import run_scenario
from driftline.apps.testing.harness import (
    PipelineRun,
    clickhouse,
    news_messages,
    pipeline_artifact,
    quick_demo_adapter,
    wait_for,
)
from driftline.models.datasets import load_dataset
from driftline.schema.events import NewsEvent
from driftline.schema.timestamps import now_ms
from driftline.settings import get_settings

RESULTS = Path(__file__).parent / "results"
TASK = "news_topic"
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
        help="comma-separated: shadow, rollback, estimate, rescore, demos",
    )
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    console = Console()
    report: dict[str, Any] = {}
    if "rescore" in parts:
        console.print("rescore: measuring against the engine's raw throughput ...")
        report.update(measure_rescore(500 if args.quick else 2000))
        console.print(f"rescore: {report}")
        save({**report, "targets": TARGETS})
    if "shadow" in parts:
        console.print("shadow: worker CPU with a 10 % mirror and without ...")
        report.update(measure_shadow(300 if args.quick else 1000))
        console.print(f"shadow: {report}")
        save({**report, "targets": TARGETS})
    if "rollback" in parts:
        console.print("rollback: labels until a planted bad promotion is rolled back ...")
        report.update(measure_rollback())
        console.print(f"rollback: {report}")
        save({**report, "targets": TARGETS})
    if "estimate" in parts:
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


# ---------------------------------------------------------------- rescore
#
# Re-scoring speed against the engine's own: ``rescore_events_per_s_ratio``.
#
# One exported version (the task's small test classifier) and one topic of news events of our own.
# The engine's raw throughput is ``LocalClient.predict`` over the same texts, already in memory,
# in one call; the rescore is ``driftline.streams.services.rescore.rescore_range`` over the same events,
# read back from Kafka, decoded, classified with the same client and stored in ClickHouse. Both
# run in this process, one after the other, after a warm-up of the engine.


def measure_rescore(events: int = 2000) -> dict[str, Any]:
    """Rescore events/s, the engine's events/s on the same texts, and their ratio."""
    from driftline.models.inference.local import LocalClient
    from driftline.models.triton.export import export
    from driftline.streams.services.rescore import rescore_range

    repository = get_settings().triton.repository
    name = f"bench_rescore_{os.getpid()}"
    version = export(TASK, pipeline_artifact(TASK), name=name, repository=repository)
    run = PipelineRun(routes={"news": f"{TASK}@{name}", "chat": "-"})
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in run.env().items() if k.startswith("DRIFTLINE_")})
    get_settings.cache_clear()
    try:
        articles = [e.text[:1500] for e in load_dataset("bbc_news").split("test")]
        messages = news_messages((f"{run.suffix}-{i}", articles[i % len(articles)]) for i in range(events))
        texts = [NewsEvent.model_validate_json(value).text for _, value in messages]  # as decoded
        run.create_topics(partitions=4)
        start = now_ms()
        run.produce(run.topics.news, messages)
        end = now_ms() + 1

        async def engine() -> float:
            async with LocalClient(repository=repository) as client:
                await client.predict(name, texts[:64], str(version))  # warm-up
                began = time.perf_counter()
                await client.predict(name, texts, str(version))
                return len(texts) / (time.perf_counter() - began)

        raw = asyncio.run(engine())
        _, counts = asyncio.run(rescore_range(TASK, start, end, version=version))
        return {
            "rescore_events": counts.rescored,
            "rescore_events_per_s": round(counts.events_per_s, 1),
            "engine_events_per_s": round(raw, 1),
            "rescore_events_per_s_ratio": round(counts.events_per_s / raw, 3),
        }
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()
        shutil.rmtree(repository / name, ignore_errors=True)


# ---------------------------------------------------------------- shadow
#
# What mirroring costs the worker: ``shadow_cpu_overhead``.
#
# One model (the task's small test classifier) serves, and a second version of it is loaded as its
# shadow (``models.shadow``). The same number of news events then passes through a fresh worker
# twice: once with ``shadow_share`` 0 (no mirroring) and once with 0.1 (a 10 % mirror). The worker
# process's CPU seconds (user + system, ``/proc``) from the first event produced until every event's
# label is stored, per event, give the ratio. Triton's own CPU for the shadow's inference is not the
# worker's and is reported apart (``shadow_mirrored_events``).


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _worker_cpu(name: str, share: float, events: int, log_dir: Path) -> dict[str, float]:
    """One fresh worker on topics of its own: CPU seconds and wall time for ``events`` events."""
    run = PipelineRun(
        routes={"news": f"{TASK}@{name}", "chat": "-"},
        extra_env={"DRIFTLINE_PIPELINE__SHADOW_SHARE": str(share), "DRIFTLINE_PIPELINE__SHADOW_CHECK_S": "1"},
    )
    articles = [e.text[:1500] for e in load_dataset("bbc_news").split("test")]
    messages = news_messages((f"{run.suffix}-{i}", articles[i % len(articles)]) for i in range(events))
    try:
        run.create_topics(partitions=4)  # as the surge tables' changelogs (settings)
        run.start_worker(log_dir)
        run.wait_healthy()
        pid = run.workers[0][0].pid
        time.sleep(3)  # the first shadow check and the model info are done before measuring
        cpu, wall = _cpu_s(pid), time.perf_counter()
        run.produce(run.topics.news, messages)
        db = clickhouse()
        done = wait_for(
            lambda: db.execute(
                "SELECT count() FROM labels FINAL WHERE event_id LIKE %(p)s", {"p": f"{run.suffix}-%"}
            )[0][0] >= events,
            timeout=900,
        )  # fmt: skip
        if not done:
            raise TimeoutError(f"the worker did not label {events} events")
        used, seconds = _cpu_s(pid) - cpu, time.perf_counter() - wall
        mirrored = db.execute(
            "SELECT count() FROM shadow_predictions FINAL WHERE event_id LIKE %(p)s", {"p": f"{run.suffix}-%"}
        )[0][0]
        return {"cpu_s": used, "wall_s": seconds, "mirrored": mirrored}
    finally:
        run.stop()


def measure_shadow(events: int = 1000) -> dict[str, Any]:
    """Worker CPU per event with a 10 % mirror ÷ without (the shadow loaded both times)."""
    from driftline.models.triton.export import export
    from driftline.models.triton.shadow_model import remove_shadow, shadow_name, write_shadow
    from driftline.online.serving.swap import TritonSwapper

    repository = get_settings().triton.repository
    name = f"bench_shadow_{os.getpid()}"
    swapper = TritonSwapper(ready_timeout_s=120)
    artifact = pipeline_artifact(TASK)
    try:
        export(TASK, artifact, name=name, repository=repository, promote=True)
        swapper._client.load_model(name)
        version = export(TASK, artifact, name=name, repository=repository, promote=False,
                         inherit_engine_from=repository / name / "1")  # fmt: skip
        write_shadow(name, version, repository)
        swapper.load_shadow(name, version)
        with tempfile.TemporaryDirectory() as logs:
            without = _worker_cpu(name, 0.0, events, Path(logs))
            with_mirror = _worker_cpu(name, 0.1, events, Path(logs))
        return {
            "shadow_cpu_overhead": round(with_mirror["cpu_s"] / without["cpu_s"], 3),
            "shadow_worker_cpu_s_without": round(without["cpu_s"], 2),
            "shadow_worker_cpu_s_with_10pct": round(with_mirror["cpu_s"], 2),
            "shadow_wall_s_without": round(without["wall_s"], 1),
            "shadow_wall_s_with_10pct": round(with_mirror["wall_s"], 1),
            "shadow_events": events,
            "shadow_mirrored_events": with_mirror["mirrored"],
        }
    finally:
        for model in (shadow_name(name), name):
            with contextlib.suppress(Exception):
                swapper._client.unload_model(model)
        remove_shadow(name, repository)
        shutil.rmtree(repository / name, ignore_errors=True)


# ---------------------------------------------------------------- rollback
#
# Labels until a bad promotion is rolled back: ``rollback_labels_to_detect``.
#
# The planted bad promotion is the quick demo's first news adapter with its head rows rotated by one
# class (confidently wrong); the good version is the adapter itself. Both classify the validation
# split. The baseline is the good version's accuracy on the first ``baseline`` texts (its live
# record); the bad version's right-or-wrong outcomes on the rest then arrive in a random order per
# seed, and the post-promotion watch (``online.watch.sprt``, default ``RollbackConfig``) reads them
# until it rolls back. The same outcomes for the good version must not roll it back.
#
# The label-free half of the watch (``sprt(kind="estimate")``) is measured on a second planted
# version: the adapter with its head scaled down, served while the gate's temperature (fitted on
# the good version's baseline texts) still applies, so its confidence collapsed as a broken export's
# would. Predictions until it is rolled back, with no label at all, and false rollbacks of the good
# version on its own estimates. The rotated head is confidently wrong, which no estimate can see:
# ``rollback_estimate_catches_rotated`` counts the seeds where the estimate alone would have caught it.


def measure_rollback(seeds: int = 20, baseline: int = 100) -> dict[str, Any]:
    """Labels to detect (mean, max over seeds), and false rollbacks of the good version."""
    import torch
    from safetensors.torch import load_file, save_file

    from driftline.models.artifacts import HEAD_FILE
    from driftline.models.classifier import load_classifier
    from driftline.online.config import online_config
    from driftline.online.gates.rollback_watch import sprt

    good_dir = quick_demo_adapter()
    with tempfile.TemporaryDirectory() as tmp:
        bad_dir = Path(tmp) / "bad"
        shutil.copytree(good_dir, bad_dir)
        head = load_file(bad_dir / HEAD_FILE)
        save_file({k: torch.roll(v, 1, dims=0).contiguous() for k, v in head.items()}, bad_dir / HEAD_FILE)
        good, bad = load_classifier(good_dir), load_classifier(bad_dir)
        texts = load_dataset("bbc_news").split("validation")
        truth = [e.label for e in texts]
        good_probs = good.predict_proba([e.text for e in texts])
        bad_probs = bad.predict_proba([e.text for e in texts])
    good_right = [good.labels[i] == t for i, t in zip(good_probs.argmax(axis=1), truth, strict=True)]
    bad_right = [bad.labels[i] == t for i, t in zip(bad_probs.argmax(axis=1), truth, strict=True)]
    config = online_config("news_topic").rollback
    base = sum(good_right[:baseline]) / baseline
    estimates = _estimate_outcomes(good.labels, good_probs, bad_probs, truth, baseline)
    labels, false_rollbacks = [], 0
    for seed in range(seeds):
        order = list(range(baseline, len(texts)))
        random.Random(seed).shuffle(order)
        verdict = sprt([bad_right[i] for i in order], base, config)
        labels.append(verdict.labels if verdict.decision == "rollback" else None)
        false_rollbacks += sprt([good_right[i] for i in order], base, config).decision == "rollback"
    detected = [n for n in labels if n is not None]
    return _estimate_figures(estimates, seeds, baseline, config) | {
        "rollback_labels_to_detect": max(detected) if len(detected) == seeds else None,
        "rollback_labels_to_detect_mean": round(sum(detected) / len(detected), 1) if detected else None,
        "rollback_detected_seeds": len(detected),
        "rollback_seeds": seeds,
        "rollback_false_alarms": false_rollbacks,
        "rollback_baseline_accuracy": round(base, 4),
        "rollback_bad_accuracy": round(sum(bad_right[baseline:]) / len(bad_right[baseline:]), 4),
    }


def _estimate_outcomes(
    labels: list[str], good: Any, rotated: Any, truth: list[str], baseline: int
) -> dict[str, Any]:
    """Calibrated top probabilities per text of the good, collapsed and rotated versions, and the
    good version's estimated accuracy on the baseline texts (the watch's estimate baseline)."""
    from driftline.online.gates.estimate import calibrate, estimate_accuracy, fit_temperature

    t = fit_temperature(good[:baseline], [labels.index(x) for x in truth[:baseline]])
    logits = np.log(np.clip(good, 1e-12, 1.0)) * 0.02  # the head scaled down: near-uniform answers
    collapsed = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {
        "temperature": t,
        "baseline": estimate_accuracy(good[:baseline], t),
        "good": calibrate(good, t).max(axis=1).tolist(),
        "collapsed": calibrate(collapsed, t).max(axis=1).tolist(),
        "rotated": calibrate(rotated, t).max(axis=1).tolist(),
    }


def _estimate_figures(estimates: dict[str, Any], seeds: int, baseline: int, config: Any) -> dict[str, Any]:
    """Predictions until the estimate rolls the collapsed version back; its false and missed alarms."""
    from driftline.online.gates.rollback_watch import sprt

    base = estimates["baseline"]
    n = len(estimates["good"])
    caught, false_alarms, rotated = [], 0, 0
    for seed in range(seeds):
        order = list(range(baseline, n))
        random.Random(seed).shuffle(order)

        def verdict(name: str, order: list[int] = order) -> Any:
            return sprt([estimates[name][i] for i in order], base, config, kind="estimate")

        collapsed = verdict("collapsed")
        caught.append(collapsed.labels if collapsed.decision == "rollback" else None)
        false_alarms += verdict("good").decision == "rollback"
        rotated += verdict("rotated").decision == "rollback"
    detected = [c for c in caught if c is not None]
    return {
        "rollback_predictions_to_detect_estimate": max(detected) if len(detected) == seeds else None,
        "rollback_estimate_false_alarms": false_alarms,
        "rollback_estimate_catches_rotated": rotated,
        "rollback_estimate_baseline": round(base, 4),
        "rollback_estimate_temperature": round(estimates["temperature"], 4),
    }


# ---------------------------------------------------------------- estimate
#
# How far label-free accuracy estimates are from measured accuracy: ``estimate_abs_error``.
#
# The quick demo's first news adapter (trained without the class that emerges later, cached by the
# demo) classifies every BBC text it did not train on. Its temperature is fitted on a holdout of the
# known classes (``driftline.online.gates.estimate``). Two streams of windows are then scored:
#
# - *stationary*: the remaining known-class texts, in windows of ``window`` events;
# - *shifted*: the same windows with the new class mixed in at the demo's share, which the model
#   cannot name.
#
# For each window the CBPE estimate (mean calibrated top probability) is compared with the accuracy
# measured against the true labels; the mean absolute difference is ``estimate_abs_error``
# (stationary) and ``estimate_abs_error_shifted``. The uncalibrated estimate (T = 1) is reported too.


def measure_estimate(window: int = 50, seed: int = 0) -> dict[str, Any]:
    """The estimate's mean absolute error per window, stationary and shifted, with and without calibration."""
    from driftline.apps.demo.options import DemoConfig
    from driftline.models.cache import training_data
    from driftline.models.classifier import load_classifier
    from driftline.models.tasks import get_task
    from driftline.online.gates.estimate import fit_temperature, mean_abs_error, window_errors

    config = DemoConfig.preset(quick=True, run_dir=get_settings().run_dir / "estimate-bench")
    task = get_task("news_topic")
    artifact = quick_demo_adapter()
    model = load_classifier(artifact)
    dataset = load_dataset(task.dataset)
    # every text the adapter never trained on: the validation and test splits and the rest of train
    plan = config.news_train
    trained, _ = training_data(task, exclude=[config.new_class], limit=plan.limit_per_class, seed=config.seed)
    seen = {e.id for e in trained}
    test = [e for split in ("train", "validation", "test") for e in dataset.split(split) if e.id not in seen]
    random.Random(seed).shuffle(test)
    known = [e for e in test if e.label != config.new_class]
    new = [e for e in test if e.label == config.new_class]
    holdout, rest = known[: len(known) // 3], known[len(known) // 3 :]

    def scored(examples: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        probs = model.predict_proba([e.text for e in examples])
        # a class the head lacks (undeclared) can never be right: label -1
        index = {label: i for i, label in enumerate(model.labels)}
        return probs, np.array([index.get(e.label, -1) for e in examples])

    t = fit_temperature(*scored(holdout))
    stationary = scored(rest)
    per_window = max(1, round(window * config.new_class_share))
    mixed: list[Any] = []
    old, fresh = iter(rest), iter(new)
    for _ in range(min(len(rest) // (window - per_window), len(new) // per_window)):
        chunk = [e for _, e in zip(range(window - per_window), old, strict=False)]
        chunk += [e for _, e in zip(range(per_window), fresh, strict=False)]
        mixed += chunk
    shifted = scored(mixed)
    result = {
        "estimate_temperature": round(t, 3),
        "estimate_window": window,
        "estimate_abs_error": mean_abs_error(window_errors(*stationary, t, window)),
        "estimate_abs_error_shifted": mean_abs_error(window_errors(*shifted, t, window)),
        "estimate_abs_error_uncalibrated": mean_abs_error(window_errors(*stationary, 1.0, window)),
        "estimate_windows": len(window_errors(*stationary, t, window)),
        "estimate_shifted_windows": len(window_errors(*shifted, t, window)),
    }
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}


if __name__ == "__main__":
    main()
