"""CBPE after temperature scaling: calibration recovers a known temperature; estimates follow accuracy.

Data are drawn from a known model: each row's true label is sampled from calibrated probabilities,
which are then sharpened by a known temperature (what an over-confident network reports). The fit
must find that temperature again, and the estimate from the reported probabilities must match the
accuracy measured on the sampled labels; without calibration it must not.
"""

from __future__ import annotations

import numpy as np
import pytest

from driftline.online.gates.estimate import (
    calibrate,
    estimate_accuracy,
    fit_temperature,
    mean_abs_error,
    nll,
    window_errors,
)


def _stream(n: int, temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Over-confident probabilities (true ones sharpened by ``temperature``); labels drawn from the true."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, size=(n, 5))
    true = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(5, p=row) for row in true])
    reported = calibrate(true, 1 / temperature)  # softmax(log p * T): sharper
    return reported, labels


def test_calibrate_keeps_the_ranking_and_sums_to_one() -> None:
    probs, _ = _stream(50, 2.0)
    for t in (0.5, 1.0, 3.0):
        scaled = calibrate(probs, t)
        assert np.allclose(scaled.sum(axis=1), 1.0)
        assert (scaled.argmax(axis=1) == probs.argmax(axis=1)).all()
    assert np.allclose(calibrate(probs, 1.0), probs)


def test_the_fit_recovers_the_temperature_and_lowers_the_nll() -> None:
    probs, labels = _stream(4000, 2.5)
    t = fit_temperature(probs, labels)
    assert t == pytest.approx(2.5, rel=0.1)
    assert nll(probs, labels, t) < nll(probs, labels, 1.0)
    assert fit_temperature(probs[:0], labels[:0]) == 1.0


def test_calibrated_estimates_follow_the_measured_accuracy_per_window() -> None:
    probs, labels = _stream(6000, 2.5, seed=1)
    t = fit_temperature(probs[:2000], labels[:2000])  # the holdout
    windows = window_errors(probs[2000:], labels[2000:], t, window=500)
    assert len(windows) == 8 and sum(w.events for w in windows) == 4000
    assert mean_abs_error(windows) < 0.05
    raw = window_errors(probs[2000:], labels[2000:], 1.0, window=500)
    assert mean_abs_error(raw) > 2 * mean_abs_error(windows), "over-confidence must show uncalibrated"
    assert np.isnan(estimate_accuracy(probs[:0]))
