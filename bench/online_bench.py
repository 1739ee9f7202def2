"""Online-learning benchmark: drift detection delay and false alarms, update wall time, recovery.

    python -m bench.online_bench [--quick] [--skip-update] [--skip-scenario] [--out .run/bench]

Parts: (1) each detector on synthetic streams: false alarms over 50,000 stationary events and the
delay (events after a shift) to the first alarm, over several seeds; (2) wall time of one
incremental LoRA update on 2,000 labelled examples with 2 threads (target <= 90 s); (3) the
emerging-class scenario (online/scenario.py): accuracy drop, detection delay, recovery ratio.
Requests failed during a hot swap are measured by tests/online/test_hot_swap.py (needs the stack).
Writes online_bench.json and online_bench.md.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from online.config import online_config
from online.drift import build_detectors

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


def update_bench(n_examples: int) -> dict[str, Any]:
    from models.tasks import get_task
    from models.training import get_or_train, new_artifact_dir, train_classifier, training_data

    task = get_task("news_topic")
    parent = get_or_train(task, exclude=["entertainment"]).artifact_dir
    train, _ = training_data(task)
    rng = random.Random(0)
    examples = rng.sample(train, min(n_examples, len(train)))
    started = time.perf_counter()
    meta = train_classifier(
        task, examples, None, parent=parent, out_dir=new_artifact_dir(task.name), epochs=1, threads=2
    )
    seconds = time.perf_counter() - started
    return {
        "examples": len(examples),
        "epochs": 1,
        "threads": 2,
        "wall_s": round(seconds, 1),
        "target_s": 90,
        "within_target": seconds <= 90,
        "steps": meta.train_config.get("steps"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--skip-update", action="store_true")
    parser.add_argument("--skip-scenario", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(".run/bench"))
    args = parser.parse_args()
    report: dict[str, Any] = {
        "detectors": detector_bench(5000 if args.quick else 50_000, 2 if args.quick else 5)
    }
    if not args.skip_update:
        report["update"] = update_bench(300 if args.quick else 2000)
    if not args.skip_scenario:
        from online.scenario import ScenarioConfig, run_emerging_class

        cfg = (
            ScenarioConfig(pre_events=300, post_events=500, update_max_steps=60)
            if args.quick
            else ScenarioConfig()
        )
        report["scenario"] = run_emerging_class(cfg).to_dict()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "online_bench.json").write_text(json.dumps(report, indent=2, default=str))
    lines = [
        "# Online-learning benchmark",
        "",
        "| detector | false alarms / run | median delay | missed |",
        "|---|---|---|---|",
    ]
    for name, d in report["detectors"].items():
        lines.append(f"| {name} | {d['false_alarms_per_run']} | {d['median_delay']} | {d['missed']} |")
    if "update" in report:
        u = report["update"]
        lines += ["", f"Update on {u['examples']} examples, 2 threads: **{u['wall_s']} s** (target <= 90 s)."]
    if "scenario" in report:
        s = report["scenario"]
        lines += [
            "",
            "Emerging class: "
            f"pre {s['pre_accuracy']:.3f}, shifted {s['shifted_accuracy']:.3f}, "
            f"updated {s['updated_accuracy']:.3f}"
            f" (recovery {s['recovery_ratio']:.3f}); detection delay {s['detection_delay']} events "
            f"({s['first_detector']}); entertainment {s['new_class_accuracy_before']:.2f} -> "
            f"{s['new_class_accuracy_after']:.2f}; promoted={s['promoted']}",
        ]
    (args.out / "online_bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
