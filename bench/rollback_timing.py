"""Labels until a bad promotion is rolled back: ``rollback_labels_to_detect`` of ``promotion_bench``.

The planted bad promotion is the quick demo's first news adapter with its head rows rotated by one
class (confidently wrong); the good version is the adapter itself. Both classify the validation
split. The baseline is the good version's accuracy on the first ``baseline`` texts (its live
record); the bad version's right-or-wrong outcomes on the rest then arrive in a random order per
seed, and the post-promotion watch (``online.watch.sprt``, default ``RollbackConfig``) reads them
until it rolls back. The same outcomes for the good version must not roll it back.

The label-free half of the watch (``sprt(kind="estimate")``) is measured on a second planted
version: the adapter with its head scaled down, served while the gate's temperature (fitted on
the good version's baseline texts) still applies, so its confidence collapsed as a broken export's
would. Predictions until it is rolled back, with no label at all, and false rollbacks of the good
version on its own estimates. The rotated head is confidently wrong, which no estimate can see:
``rollback_estimate_catches_rotated`` counts the seeds where the estimate alone would have caught it.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from driftline.apps.testing.harness import quick_demo_adapter


def measure_rollback(seeds: int = 20, baseline: int = 100) -> dict[str, Any]:
    """Labels to detect (mean, max over seeds), and false rollbacks of the good version."""
    import torch
    from safetensors.torch import load_file, save_file

    from driftline.models.artifacts import HEAD_FILE
    from driftline.models.classifier import load_classifier
    from driftline.models.datasets import load_dataset
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
    import numpy as np

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
