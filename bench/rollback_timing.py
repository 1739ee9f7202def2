"""Labels until a bad promotion is rolled back: ``rollback_labels_to_detect`` of ``promotion_bench``.

The planted bad promotion is the quick demo's first news adapter with its head rows rotated by one
class (confidently wrong); the good version is the adapter itself. Both classify the validation
split. The baseline is the good version's accuracy on the first ``baseline`` texts (its live
record); the bad version's right-or-wrong outcomes on the rest then arrive in a random order per
seed, and the post-promotion watch (``online.watch.sprt``, default ``RollbackConfig``) reads them
until it rolls back. The same outcomes for the good version must not roll it back.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import quick_demo_adapter


def measure_rollback(seeds: int = 20, baseline: int = 100) -> dict[str, Any]:
    """Labels to detect (mean, max over seeds), and false rollbacks of the good version."""
    import torch
    from safetensors.torch import load_file, save_file

    from driftline.models.artifacts import HEAD_FILE
    from driftline.models.classifier import load_classifier
    from driftline.models.datasets import load_dataset
    from driftline.online.config import online_config
    from driftline.online.watch import sprt

    good_dir = quick_demo_adapter()
    with tempfile.TemporaryDirectory() as tmp:
        bad_dir = Path(tmp) / "bad"
        shutil.copytree(good_dir, bad_dir)
        head = load_file(bad_dir / HEAD_FILE)
        save_file({k: torch.roll(v, 1, dims=0).contiguous() for k, v in head.items()}, bad_dir / HEAD_FILE)
        good, bad = load_classifier(good_dir), load_classifier(bad_dir)
        texts = load_dataset("bbc_news").split("validation")
        truth = [e.label for e in texts]
        good_right = [p == t for p, t in zip(good.predict([e.text for e in texts]), truth, strict=True)]
        bad_right = [p == t for p, t in zip(bad.predict([e.text for e in texts]), truth, strict=True)]
    config = online_config("news_topic").rollback
    base = sum(good_right[:baseline]) / baseline
    labels, false_rollbacks = [], 0
    for seed in range(seeds):
        order = list(range(baseline, len(texts)))
        random.Random(seed).shuffle(order)
        verdict = sprt([bad_right[i] for i in order], base, config)
        labels.append(verdict.labels if verdict.decision == "rollback" else None)
        false_rollbacks += sprt([good_right[i] for i in order], base, config).decision == "rollback"
    detected = [n for n in labels if n is not None]
    return {
        "rollback_labels_to_detect": max(detected) if len(detected) == seeds else None,
        "rollback_labels_to_detect_mean": round(sum(detected) / len(detected), 1) if detected else None,
        "rollback_detected_seeds": len(detected),
        "rollback_seeds": seeds,
        "rollback_false_alarms": false_rollbacks,
        "rollback_baseline_accuracy": round(base, 4),
        "rollback_bad_accuracy": round(sum(bad_right[baseline:]) / len(bad_right[baseline:]), 4),
    }
