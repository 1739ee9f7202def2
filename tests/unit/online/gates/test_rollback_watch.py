"""The post-promotion SPRT (``online.gates.rollback_watch``) on simulated outcome streams.

A version as accurate as the baseline must almost never be rolled back (at most about ``alpha``
of the runs), a version ``drop`` or more worse must almost always be, and a bad version (the
planted case) within a few labels. The bounds are Wald's.
"""

from __future__ import annotations

import math
import random

import pytest

from driftline.online.config import RollbackConfig
from driftline.online.gates.rollback_watch import sprt

CONFIG = RollbackConfig()


def _stream(accuracy: float, n: int, seed: int) -> list[bool]:
    rng = random.Random(seed)
    return [rng.random() < accuracy for _ in range(n)]


def test_bounds_are_walds_and_few_labels_keep_watching() -> None:
    verdict = sprt([True, False], 0.9, CONFIG)
    assert verdict.decision == "watching" and verdict.labels == 2 and verdict.correct == 1
    assert verdict.upper == pytest.approx(math.log((1 - CONFIG.beta) / CONFIG.alpha))
    assert verdict.lower == pytest.approx(math.log(CONFIG.beta / (1 - CONFIG.alpha)))
    assert sprt([], 0.9, CONFIG).live_accuracy is None


def test_a_bad_version_is_rolled_back_within_a_few_labels() -> None:
    labels = []
    for seed in range(50):
        verdict = sprt(_stream(0.3, 300, seed), 0.9, CONFIG)
        assert verdict.decision == "rollback", seed
        labels.append(verdict.labels)
    assert sum(labels) / len(labels) <= 12 and max(labels) <= 30
    assert verdict.evidence()["watch_decision"] == "rollback"


def test_a_version_as_good_as_the_baseline_is_rarely_rolled_back_and_one_drop_worse_usually_is() -> None:
    runs = 400
    good = [sprt(_stream(0.85, 300, s), 0.85, CONFIG).decision for s in range(runs)]
    assert good.count("rollback") / runs <= 2 * CONFIG.alpha, "false rollbacks beyond alpha"
    assert good.count("watching") == 0, "300 labels always decide"
    worse = [sprt(_stream(0.85 - CONFIG.drop, 300, s), 0.85, CONFIG).decision for s in range(runs)]
    assert worse.count("rollback") / runs >= 1 - 2 * CONFIG.beta, "missed drops beyond beta"


def test_the_watch_ends_after_max_labels_and_reads_no_further() -> None:
    config = RollbackConfig(max_labels=10)
    alternating = [True, False] * 50  # 0.5 against a baseline of 0.55: no verdict within 10 labels
    verdict = sprt(alternating, 0.55, config)
    assert verdict.decision == "cleared" and verdict.labels == 10 and verdict.correct == 5


def test_extreme_baselines_stay_inside_the_unit_interval() -> None:
    assert sprt([False] * 5, 1.0, CONFIG).decision == "rollback"
    assert sprt([True] * 300, 0.05, CONFIG).decision in ("cleared", "watching")


def _soft_stream(mean: float, n: int, seed: int) -> list[float]:
    """Calibrated top probabilities averaging ``mean`` (Beta-distributed, as a classifier's are)."""
    rng = random.Random(seed)
    strength = 6.0
    return [rng.betavariate(mean * strength, (1 - mean) * strength) for _ in range(n)]


def test_label_outcomes_read_as_numbers_give_the_same_verdict() -> None:
    for seed in range(20):
        stream = _stream(0.7, 120, seed)
        assert sprt(stream, 0.85, CONFIG) == sprt([float(x) for x in stream], 0.85, CONFIG)


def test_estimated_outcomes_roll_back_a_collapse_early_and_a_calibrated_equal_version_almost_never() -> None:
    collapsed = [sprt(_soft_stream(0.25, 2000, s), 0.85, CONFIG, kind="estimate") for s in range(50)]
    assert all(v.decision == "rollback" and v.kind == "estimate" for v in collapsed)
    assert max(v.labels for v in collapsed) <= 15
    runs = 300
    equal = [sprt(_soft_stream(0.85, 2000, s), 0.85, CONFIG, kind="estimate").decision for s in range(runs)]
    assert equal.count("rollback") / runs <= CONFIG.alpha, "Wald's bound holds for soft outcomes too"
    better = [sprt(_soft_stream(0.9, 2000, s), 0.75, CONFIG, kind="estimate").decision for s in range(50)]
    assert better.count("rollback") == 0 and better.count("cleared") == 50
    evidence = collapsed[0].evidence()
    assert evidence["estimate_decision"] == "rollback" and evidence["estimated_accuracy"] < 0.5
    assert "estimated accuracy" in collapsed[0].why(1, CONFIG)


def test_a_slightly_less_confident_version_is_not_rolled_back_on_estimates() -> None:
    """Calibration is uncertain: the estimate's indifference point sits near ``p0 - estimate_drop / 2``
    (0.76 here), so a version half a label-``drop`` less confident is cleared, not rolled back."""
    runs = 200
    softer = [
        sprt(_soft_stream(0.85 - CONFIG.drop / 2, 2000, s), 0.85, CONFIG, kind="estimate").decision
        for s in range(runs)
    ]
    assert softer.count("rollback") / runs <= 0.05 and softer.count("watching") == 0
