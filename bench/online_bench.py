"""Online-learning benchmark: drift detection delay and false alarms, update wall time, recovery.

``python -m bench.online_bench [--quick] [--skip-update] [--skip-swap] [--skip-scenario]`` (the hot swap
needs the local stack) writes ``bench/results/online_bench.json`` and ``.md``. Parts, the emerging-class
scenario (``run_emerging_class``) and keys: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from driftline.apps.demo.stream import HELD_OUT, HELD_OUT_SPLITS, EmergingStream
from driftline.models.datasets import Example
from driftline.online.config import UpdaterConfig, online_config
from driftline.online.drift import DriftMonitor, build_detectors
from driftline.online.update.data import update_split
from driftline.online.update.sources import ListSource
from driftline.online.update.trigger import UpdateTrigger
from driftline.online.update.updater import Updater
from driftline.schema.timestamps import now_ms

NEW_CLASS = "entertainment"
STREAM_SPLITS = HELD_OUT

STREAMS = {  # detector -> (stationary value, shifted value)
    "error_rate": (lambda r: int(r.random() < 0.05), lambda r: int(r.random() < 0.3)),
    "confidence": (
        lambda r: min(1.0, max(0.0, r.gauss(0.9, 0.08))),
        lambda r: min(1.0, max(0.0, r.gauss(0.7, 0.15))),
    ),
    "label_mix": (
        lambda r: r.choice(["business", "politics", "sport", "tech"]),
        lambda r: "business" if r.random() < 0.4 else r.choice(["business", "politics", "sport", "tech"]),
    ),
}


def detector_bench(stationary: int, seeds: int) -> dict[str, Any]:
    """False alarms and detection delays of each detector over stationary and shifted synthetic streams."""
    config = online_config("news_topic").drift
    out: dict[str, Any] = {}
    for name, (before, after) in STREAMS.items():
        false_alarms, delays = [], []
        for seed in range(seeds):
            rng = random.Random(seed)
            detector = build_detectors(config)[name]
            false_alarms.append(sum(detector.update(before(rng)) for _ in range(stationary)))
            detector = build_detectors(config)[name]
            for _ in range(2000):
                detector.update(before(rng))
            delay = next((i for i in range(1, 5001) if detector.update(after(rng))), None)
            delays.append(delay)
        found = [d for d in delays if d is not None]
        out[name] = {
            "stationary_events": stationary,
            "false_alarms_per_run": false_alarms,
            "detection_delay_events": delays,
            "median_delay": statistics.median(found) if found else None,
            "missed": len(delays) - len(found),
        }
    return out


def update_bench(n_examples: int, *, max_length: int | None = None, batch_size: int | None = None) -> dict:
    """One incremental update from the serving (no-entertainment) adapter on ``n_examples`` labels.

    Training is timed alone (the target) and then the evaluation the updater adds (candidate and
    serving on a 20% holdout-sized set), so the report shows where the time goes. The labelled
    examples are drawn from every split: this measures cost, not accuracy.
    """
    from driftline.models.artifacts import new_artifact_dir
    from driftline.models.cache import get_or_train
    from driftline.models.classifier import load_classifier
    from driftline.models.datasets import load_dataset
    from driftline.models.tasks import get_task
    from driftline.models.training import evaluate, train_classifier

    task = get_task("news_topic")
    parent = get_or_train(task, exclude=["entertainment"]).artifact_dir
    examples = load_dataset(task.dataset).examples
    rng = random.Random(0)
    examples = rng.sample(examples, min(n_examples, len(examples)))
    holdout = examples[: len(examples) // 5]
    started = time.perf_counter()
    out = new_artifact_dir(task.name)
    meta = train_classifier(
        task,
        examples,
        None,
        parent=parent,
        out_dir=out,
        epochs=1,
        threads=2,
        max_length=max_length,
        batch_size=batch_size,
    )
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    for path in (out, parent):
        evaluate(load_classifier(path), holdout)
    eval_s = time.perf_counter() - started
    return {
        "examples": len(examples),
        "epochs": 1,
        "threads": 2,
        "max_length": meta.max_length,
        "batch_size": meta.train_config.get("batch_size"),
        "bf16_autocast": meta.train_config.get("bf16_autocast"),
        "steps": meta.train_config.get("steps"),
        "wall_s": round(train_s, 1),
        "eval_s": round(eval_s, 1),
        "n_eval": len(holdout),
        "target_s": 90,
        "within_target": train_s <= 90,
    }


SWAP_TEXTS = [
    "Shares in the bank rose after profits beat forecasts.",
    "The striker scored twice as United won the cup final.",
    "The government announced a new bill on election spending.",
    "The new phone chip doubles battery life, the firm says.",
]


def swap_bench(swaps: int = 4, workers: int = 3) -> dict[str, Any]:
    """Requests failed or lost while a Triton model is hot-swapped back and forth under load.

    Needs the local stack. A unique model name, two exported versions of one small artifact; the
    client has retries disabled, so any error during a swap counts as a failure.
    """
    import asyncio
    import shutil
    import uuid

    from driftline.models.cache import get_or_train
    from driftline.models.inference.triton import TritonClient
    from driftline.models.tasks import get_task
    from driftline.models.triton.export import export
    from driftline.online.serving.swap import TritonSwapper
    from driftline.settings import get_settings

    repo = get_settings().triton.repository
    name = f"swapbench_{uuid.uuid4().hex[:8]}"
    artifact = get_or_train(get_task("news_topic"), limit=16, max_steps=4, progress=False).artifact_dir
    swapper = TritonSwapper(drain_quiet_s=1.0, drain_timeout_s=10)

    async def run() -> dict[str, Any]:
        log: list[tuple[str | None, str]] = []
        stop = asyncio.Event()

        async def worker(client: TritonClient, i: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    [p] = await client.predict(name, [SWAP_TEXTS[(i + n) % len(SWAP_TEXTS)]])
                    log.append((p.model_version, "ok"))
                except Exception as exc:
                    log.append((None, f"{type(exc).__name__}: {exc}"[:200]))

        reports = []
        async with TritonClient(timeout_s=60, retries=0) as client:
            tasks = [asyncio.create_task(worker(client, i)) for i in range(workers)]
            await asyncio.sleep(2)
            for k in range(swaps):
                reports.append(await asyncio.to_thread(swapper.swap, name, 2 if k % 2 == 0 else 1))
                await asyncio.sleep(2)
            stop.set()
            await asyncio.gather(*tasks)
        failures = [outcome for _, outcome in log if outcome != "ok"]
        return {
            "requests": len(log),
            "failed": len(failures),
            "failure_samples": failures[:3],
            "swaps": swaps,
            "versions_seen": sorted({v for v, _ in log if v}),
            "load_s": [round(r.load_s, 2) for r in reports],
            "drain_s": [round(r.drain_s, 2) for r in reports],
            "retries": 0,
        }

    try:
        export("news_topic", artifact, name=name, repository=repo, promote=True)
        swapper._client.load_model(name)
        export("news_topic", artifact, name=name, repository=repo, promote=False)
        return asyncio.run(run())
    finally:
        with contextlib.suppress(Exception):
            swapper._client.unload_model(name)
        swapper.close()
        shutil.rmtree(repo / name, ignore_errors=True)


# ---------------------------------------------------------------- the emerging-class scenario


@dataclass
class ScenarioConfig:
    """The stream's shape and the update's cost knobs (None = the task's own settings)."""

    pre_events: int = 1000
    post_events: int = 1500
    entertainment_share: float = 0.4
    feedback_rate: float = 0.2
    labels_after_drift: int | None = None  # None = the task's online configuration
    initial_limit: int | None = None  # per-class cap for the first adapter (None = whole train split)
    initial_max_steps: int | None = None
    update_max_steps: int | None = 150
    update_epochs: int = 2
    update_lr: float | None = None  # None = the task's training lr
    update_head_lr: float | None = None
    update_batch_size: int | None = None
    replay_size: int = 400
    original_eval_size: int = 300
    batch: int = 50
    seed: int = 0


@dataclass
class ScenarioResult:
    """What one scenario run measured: accuracies per phase, detection delay, the update decision."""

    pre_accuracy: float = 0.0
    shifted_accuracy: float = 0.0  # after the shift, before any update
    updated_accuracy: float = 0.0  # after the promoted update, all events
    updated_accuracy_unseen: float = 0.0  # after the update, texts the candidate did not train on
    new_class_accuracy_before: float = 0.0
    new_class_accuracy_after: float = 0.0
    new_class_accuracy_after_unseen: float = 0.0
    n_after_update: int = 0
    n_after_update_unseen: int = 0
    detection_delay: int | None = None  # events after the shift until the first drift alert
    first_detector: str = ""
    false_alarms_before_shift: int = 0
    alerts: list[dict[str, Any]] = field(default_factory=list)
    promoted: bool = False
    decision: str = ""
    decision_metrics: dict[str, Any] = field(default_factory=dict)
    update_at_event: int | None = None
    waits: int = 0  # times the gate (or the holdout size) asked for more labels first
    update_seconds: float = 0.0
    feedback_labels: int = 0
    stream_texts: int = 0
    events: int = 0

    @property
    def recovery_ratio(self) -> float:
        """Accuracy on unseen texts after the update over pre-shift accuracy (target >= 0.95)."""
        return self.updated_accuracy_unseen / self.pre_accuracy if self.pre_accuracy else 0.0

    @property
    def recovery_ratio_all(self) -> float:
        """Like ``recovery_ratio`` but over every event after the update."""
        return self.updated_accuracy / self.pre_accuracy if self.pre_accuracy else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values, recovery ratios included."""
        return {
            **asdict(self),
            "recovery_ratio": round(self.recovery_ratio, 4),
            "recovery_ratio_all": round(self.recovery_ratio_all, 4),
        }


def _accuracy(pairs: list[tuple[str, str]]) -> float:
    return sum(p == t for p, t in pairs) / len(pairs) if pairs else 0.0


def stream_pool(exclude_ids: set[str]) -> list[Example]:
    """BBC News texts the scenario may replay (``HELD_OUT_SPLITS``), minus ``exclude_ids``."""
    from driftline.models.datasets import load_dataset
    from driftline.models.tasks import get_task

    dataset = load_dataset(get_task("news_topic").dataset)
    return [e for e in dataset.examples if e.id not in exclude_ids and HELD_OUT_SPLITS.admits(e, NEW_CLASS)]


def build_stream(cfg: ScenarioConfig, pool: list[Example]) -> list[Example]:
    """Pre-shift events without the new class, then a mix with ``entertainment_share`` of it.

    The demo's builder (``EmergingStream``) over ``pool`` with the held-out splits' rule.
    """
    stream = EmergingStream(pool, NEW_CLASS, cfg.entertainment_share, cfg.seed, splits=HELD_OUT_SPLITS)
    return stream.take(cfg.pre_events, cfg.post_events)


def run_emerging_class(
    cfg: ScenarioConfig | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> ScenarioResult:
    """Run the scenario end to end in-process (initial adapter cached) and return what it measured."""
    from driftline.models.artifacts import read_meta
    from driftline.models.cache import get_or_train, training_data
    from driftline.models.classifier import load_classifier
    from driftline.models.tasks import get_task

    cfg = cfg or ScenarioConfig()
    task = get_task("news_topic")
    initial = get_or_train(
        task, exclude=[NEW_CLASS], limit=cfg.initial_limit, max_steps=cfg.initial_max_steps, progress=progress
    )
    train, _ = training_data(task, exclude=[NEW_CLASS], limit=cfg.initial_limit)
    pool = stream_pool({e.id for e in train})
    stream = build_stream(cfg, pool)
    rng = random.Random(cfg.seed + 1)

    base = online_config("news_topic")
    updater_cfg = UpdaterConfig(
        **{
            **base.updater.model_dump(),
            "max_steps": cfg.update_max_steps,
            "epochs": cfg.update_epochs,
            "replay_size": cfg.replay_size,
            "lr": cfg.update_lr,
            "head_lr": cfg.update_head_lr,
            "batch_size": cfg.update_batch_size,
            **({"labels_after_drift": cfg.labels_after_drift} if cfg.labels_after_drift is not None else {}),
        }
    )
    source = ListSource()
    updater = Updater(
        "news_topic",
        source=source,
        config=updater_cfg,
        progress=progress,
        seed=cfg.seed,
        original_eval_size=cfg.original_eval_size,
        log=log,
    )
    monitor = DriftMonitor("news_topic", base.drift)
    artifact, version = initial.artifact_dir, 1
    adapter_hash = read_meta(artifact).adapter_hash
    model = load_classifier(artifact)
    result = ScenarioResult(events=len(stream), stream_texts=len({e.id for e in stream}))
    outcomes: list[tuple[int, str, str, str]] = []  # (index, predicted, true, text id)
    trained_ids: frozenset[str] = frozenset()
    trigger = UpdateTrigger(updater_cfg)
    i = 0
    while i < len(stream):
        chunk = stream[i : i + cfg.batch]
        probs = model.predict_proba([e.text for e in chunk])
        for offset, (example, row) in enumerate(zip(chunk, probs, strict=True)):
            index = i + offset
            label = model.labels[int(row.argmax())]
            outcomes.append((index, label, example.label, example.id))
            prediction = {
                "label": label,
                "confidence": float(row.max()),
                "model_version": str(version),
                "adapter_hash": adapter_hash,
            }
            events = monitor.update_prediction(prediction)
            if rng.random() < cfg.feedback_rate:
                source.add(example, now_ms())
                result.feedback_labels += 1
                trigger.on_feedback()
                events += monitor.update_feedback(label == example.label, label=example.label)
            for event in events:
                trigger.on_drift(event)
                result.alerts.append(
                    {"event": index, "detector": event.detector, "statistic": event.statistic}
                )
                if index < cfg.pre_events:
                    result.false_alarms_before_shift += 1
                    log(f"false alarm before the shift at event {index}: {event.detector}")
                elif result.detection_delay is None:
                    result.detection_delay = index - cfg.pre_events + 1
                    result.first_detector = event.detector
                    log(f"drift detected {result.detection_delay} events after the shift ({event.detector})")
        i += len(chunk)
        reason = trigger.reason() if result.update_at_event is None else None
        if reason is not None:
            log(f"update due at event {i}: {reason}")
            drift, since = trigger.drift, trigger.since_ts_ms
            trigger.mark_updated()
            limit = updater_cfg.max_recent_labels
            recent = source.recent_examples("news_topic", limit)
            fresh = source.recent_examples("news_topic", limit, since) if since else None
            if updater.labels_short(len(update_split(recent, fresh, updater_cfg.holdout_fraction)[1])):
                result.waits += 1
                trigger.wait(drift, since, updater_cfg.wait_labels)
                continue
            started = time.perf_counter()
            candidate = updater.train_candidate(artifact, recent, fresh)
            result.update_seconds = round(time.perf_counter() - started, 1)
            log(f"update at event {i}: {candidate.decision.verdict} - {candidate.decision.reason}")
            if candidate.decision.wait:
                result.waits += 1
                trigger.wait(drift, since, updater_cfg.wait_labels)
                continue
            result.update_at_event = i
            result.promoted = candidate.decision.promote
            result.decision = candidate.decision.reason
            result.decision_metrics = candidate.decision.metrics
            if result.promoted:
                artifact, version = candidate.artifact, version + 1
                adapter_hash = candidate.meta.adapter_hash
                trained_ids = candidate.trained_ids
                model = load_classifier(artifact)

    shift = cfg.pre_events
    update_at = result.update_at_event or len(stream)
    after = [(p, t, tid) for j, p, t, tid in outcomes if j >= update_at]
    unseen = [(p, t) for p, t, tid in after if tid not in trained_ids]
    result.pre_accuracy = _accuracy([(p, t) for j, p, t, _ in outcomes if j < shift])
    result.shifted_accuracy = _accuracy([(p, t) for j, p, t, _ in outcomes if shift <= j < update_at])
    result.updated_accuracy = _accuracy([(p, t) for p, t, _ in after])
    result.updated_accuracy_unseen = _accuracy(unseen)
    result.n_after_update, result.n_after_update_unseen = len(after), len(unseen)
    result.new_class_accuracy_before = _accuracy(
        [(p, t) for j, p, t, _ in outcomes if shift <= j < update_at and t == NEW_CLASS]
    )
    result.new_class_accuracy_after = _accuracy([(p, t) for p, t, _ in after if t == NEW_CLASS])
    result.new_class_accuracy_after_unseen = _accuracy([(p, t) for p, t in unseen if t == NEW_CLASS])
    return result


def markdown(report: dict[str, Any]) -> list[str]:
    """The report as markdown lines (tables per part)."""
    lines = [
        "# Online-learning benchmark",
        "",
        f"Host: {report['host']['cpus']} CPUs, load average {report['host']['load_before']} at start.",
        "",
        "| detector | stationary events | false alarms / run | detection delay (events) | median | missed |",
        "|---|---|---|---|---|---|",
    ]
    for name, d in report["detectors"].items():
        lines.append(
            f"| {name} | {d['stationary_events']} | {d['false_alarms_per_run']} | "
            f"{d['detection_delay_events']} | {d['median_delay']} | {d['missed']} |"
        )
    if "update" in report:
        u = report["update"]
        lines += [
            "",
            f"Incremental update on {u['examples']} labelled examples, {u['epochs']} epoch, "
            f"{u['threads']} threads, max_length {u['max_length']}, batch {u['batch_size']}, "
            f"bf16 {u['bf16_autocast']}: training **{u['wall_s']} s** (target <= {u['target_s']} s, "
            f"{'met' if u['within_target'] else 'MISSED'}), evaluation of both models on "
            f"{u['n_eval']} examples {u['eval_s']} s.",
        ]
    if "swap" in report:
        w = report["swap"]
        lines += [
            "",
            f"Hot swap under load: {w.get('swaps')} swaps, {w.get('requests')} requests, "
            f"**{w.get('failed')} failed** (client retries {w.get('retries')}); "
            f"load {w.get('load_s')} s, drain {w.get('drain_s')} s."
            if "error" not in w
            else f"Hot swap: not measured ({w['error']}).",
        ]
    if "scenario" in report:
        s = report["scenario"]
        m = s.get("decision_metrics", {})
        lines += [
            "",
            f"## Emerging class (entertainment appears after event {s['config']['pre_events']})",
            "",
            "| measure | value |",
            "|---|---|",
            f"| stream | {s['events']} events over {s['stream_texts']} validation+test texts, "
            f"{s['feedback_labels']} feedback labels |",
            f"| accuracy before the shift | {s['pre_accuracy']:.3f} |",
            f"| accuracy after the shift, before the update | {s['shifted_accuracy']:.3f} |",
            f"| false alarms before the shift | {s['false_alarms_before_shift']} |",
            f"| detection delay | {s['detection_delay']} events ({s['first_detector']}) |",
            f"| update at event | {s['update_at_event']} ({s['update_seconds']} s incl. evaluation) |",
            f"| decision | {'promoted' if s['promoted'] else 'rejected'}: {s['decision']} |",
            f"| recent holdout (candidate vs serving) | {m.get('candidate_recent')} vs "
            f"{m.get('serving_recent')} (n={m.get('n_recent_holdout')}) |",
            f"| original test (candidate vs serving) | {m.get('candidate_original')} vs "
            f"{m.get('serving_original')} (n={m.get('n_original')}) |",
            f"| accuracy after the update, all events | {s['updated_accuracy']:.3f} "
            f"(n={s['n_after_update']}) |",
            f"| accuracy after the update, texts not trained on | {s['updated_accuracy_unseen']:.3f} "
            f"(n={s['n_after_update_unseen']}) |",
            f"| entertainment accuracy before -> after (unseen) | {s['new_class_accuracy_before']:.3f} -> "
            f"{s['new_class_accuracy_after']:.3f} ({s['new_class_accuracy_after_unseen']:.3f}) |",
            f"| recovery ratio (unseen / pre-shift; all) | **{s['recovery_ratio']:.3f}**; "
            f"{s['recovery_ratio_all']:.3f} |",
        ]
    return lines


def main() -> None:
    """Run the selected parts, print the report, save JSON + markdown under bench/results/."""
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--skip-update", action="store_true")
    parser.add_argument("--skip-swap", action="store_true", help="skip the hot swap (needs the stack)")
    parser.add_argument("--skip-scenario", action="store_true")
    parser.add_argument("--update-max-length", type=int, default=None, help="token cap for the update")
    parser.add_argument("--update-batch-size", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results"))
    args = parser.parse_args()
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every part: a long run that is stopped still leaves its figures
        report["total_s"] = round(time.perf_counter() - started, 1)
        (args.out / "online_bench.json").write_text(json.dumps(report, indent=2, default=str))
        (args.out / "online_bench.md").write_text("\n".join(markdown(report)) + "\n")

    report: dict[str, Any] = {
        "host": {"cpus": os.cpu_count(), "load_before": [round(x, 2) for x in os.getloadavg()]},
        "detectors": detector_bench(5000 if args.quick else 50_000, 2 if args.quick else 5),
    }
    save()
    if not args.skip_update:
        report["update"] = update_bench(
            300 if args.quick else 2000, max_length=args.update_max_length, batch_size=args.update_batch_size
        )
        save()
    if not args.skip_swap:
        try:
            report["swap"] = swap_bench(2 if args.quick else 4)
        except Exception as exc:
            report["swap"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        save()
    if not args.skip_scenario:
        cfg = (
            ScenarioConfig(
                pre_events=300, post_events=500, update_max_steps=60, initial_limit=150, initial_max_steps=160
            )
            if args.quick
            else ScenarioConfig()
        )
        report["scenario"] = {**run_emerging_class(cfg).to_dict(), "config": asdict(cfg)}
    save()
    print("\n".join(markdown(report)))


if __name__ == "__main__":
    main()
