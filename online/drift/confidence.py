"""Unsupervised drift: a sustained drop in the mean top-class probability.

Needs no labels, so it reacts long before feedback accumulates (Page-Hinkley, ``mode='down'``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from river import drift

from driftline.online.drift.base import RiverDetector, RiverDetectorState
from driftline.online.drift.state import Count, ParamValue


class ConfidenceState(RiverDetectorState):
    """Checkpoint of a ``ConfidenceDetector``."""

    window: Count


class ConfidenceDetector(RiverDetector):
    """``update(p)`` with the probability of the predicted class, in [0, 1]."""

    name = "confidence"
    _state_model: ClassVar[type[RiverDetectorState]] = ConfidenceState

    def __init__(
        self,
        min_instances: int = 100,
        delta: float = 0.01,
        threshold: float = 10.0,
        alpha: float = 1.0,
        mode: str = "down",
    ) -> None:
        self.min_instances = min_instances
        self.delta = delta
        self.threshold = threshold
        self.alpha = alpha
        self.mode = mode
        self._window = 0
        super().__init__()

    def params(self) -> dict[str, ParamValue]:
        """The Page-Hinkley parameters."""
        return {
            "min_instances": self.min_instances,
            "delta": self.delta,
            "threshold": self.threshold,
            "alpha": self.alpha,
            "mode": self.mode,
        }

    def _extra_state(self) -> dict[str, Any]:
        return {"window": self._window}

    def _load_extra(self, state: ConfidenceState) -> None:
        self._window = state.window

    def _make(self) -> Any:
        return drift.PageHinkley(
            min_instances=self.min_instances,
            delta=self.delta,
            threshold=self.threshold,
            alpha=self.alpha,
            mode=self.mode,
        )

    def _observe(self, x: Any) -> bool:
        value = float(x)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"confidence must lie in [0, 1], got {x!r}")
        self._detector.update(value)
        fired = bool(self._detector.drift_detected)
        # Page-Hinkley restarts itself on the next update after a detection; mirror that count.
        self._window = 0 if fired else self._window + 1
        return fired

    @property
    def statistic(self) -> float:
        """The running mean confidence."""
        return float(self._detector._x_mean.get())

    @property
    def window(self) -> int:
        """Observations since the last reset."""
        return self._window

    def reset(self) -> None:
        """Start over (a new serving version)."""
        super().reset()
        self._window = 0
