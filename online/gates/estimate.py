"""Accuracy without labels: confidence-based performance estimation (CBPE) after temperature scaling.

Calibrated top probabilities estimate a window's accuracy between feedback labels; the estimate lags under a
shift to an unknown class, so ``window_errors`` reports it beside the measured accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: temperatures are searched in [exp(-3), exp(3)]
LOG_T_BOUNDS = (-3.0, 3.0)
EPS = 1e-12


def calibrate(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Row-wise ``softmax(log p / T)``: the probabilities of the temperature-scaled model."""
    logits = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def nll(probabilities: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` (column indices) under the scaled probabilities."""
    scaled = calibrate(probabilities, temperature)
    return float(-np.log(np.clip(scaled[np.arange(len(labels)), labels], EPS, 1.0)).mean())


def fit_temperature(probabilities: np.ndarray, labels: Sequence[int]) -> float:
    """The temperature that minimises the holdout NLL (1.0, no change, without labels)."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(labels, dtype=np.int64)
    if len(y) == 0:
        return 1.0
    result = minimize_scalar(
        lambda log_t: nll(probabilities, y, float(np.exp(log_t))), bounds=LOG_T_BOUNDS, method="bounded"
    )
    return float(np.exp(result.x))


def estimate_accuracy(probabilities: np.ndarray, temperature: float = 1.0) -> float:
    """CBPE: the expected accuracy of these predictions, the mean calibrated top probability."""
    if len(probabilities) == 0:
        return float("nan")
    return float(calibrate(probabilities, temperature).max(axis=1).mean())


@dataclass(frozen=True)
class Window:
    """One window of predictions: estimated and (where labels exist) measured accuracy."""

    start: int
    events: int
    estimated: float
    measured: float

    @property
    def error(self) -> float:
        """|estimated - measured|."""
        return abs(self.estimated - self.measured)


def window_errors(
    probabilities: np.ndarray, labels: Sequence[int], temperature: float, window: int
) -> list[Window]:
    """Consecutive windows of ``window`` predictions (the last one may be shorter, not empty)."""
    y = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probabilities, dtype=np.float64)
    windows = []
    for start in range(0, len(y), window):
        p, t = probs[start : start + window], y[start : start + window]
        measured = float((p.argmax(axis=1) == t).mean())
        windows.append(Window(start, len(t), estimate_accuracy(p, temperature), measured))
    return windows


def mean_abs_error(windows: Sequence[Window]) -> float:
    """The mean |estimated - measured| over the windows (``estimate_abs_error``)."""
    return float(np.mean([w.error for w in windows])) if windows else float("nan")
