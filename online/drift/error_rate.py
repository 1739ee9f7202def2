"""Supervised drift: the 0/1 error stream from predictions joined with feedback labels.

The most direct evidence, as fast as feedback arrives; ADWIN by default (DDM optional), increases only.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import StrictFloat
from river import drift

from driftline.online.drift.base import RiverDetector, RiverDetectorState
from driftline.online.drift.state import ParamValue


class ErrorRateState(RiverDetectorState):
    """Checkpoint of an ``ErrorRateDetector``."""

    last_mean: StrictFloat


class ErrorRateDetector(RiverDetector):
    """``update(1)`` for a wrong prediction, ``update(0)`` for a right one."""

    name = "error_rate"
    _state_model: ClassVar[type[RiverDetectorState]] = ErrorRateState

    def __init__(
        self,
        method: str = "adwin",
        delta: float = 0.002,
        grace_period: int = 30,
        warm_start: int = 30,
        drift_threshold: float = 3.0,
    ) -> None:
        if method not in {"adwin", "ddm"}:
            raise ValueError(f"error_rate method must be 'adwin' or 'ddm', got {method!r}")
        self.method = method
        self.delta = delta
        self.grace_period = grace_period
        self.warm_start = warm_start
        self.drift_threshold = drift_threshold
        self._last_mean = 0.0
        super().__init__()

    def params(self) -> dict[str, ParamValue]:
        """The method and the parameters it uses."""
        if self.method == "ddm":
            return {"method": "ddm", "warm_start": self.warm_start, "drift_threshold": self.drift_threshold}
        return {"method": "adwin", "delta": self.delta, "grace_period": self.grace_period}

    def _extra_state(self) -> dict[str, Any]:
        return {"last_mean": float(self._last_mean)}

    def _load_extra(self, state: ErrorRateState) -> None:
        self._last_mean = state.last_mean

    def _make(self) -> Any:
        if self.method == "ddm":
            return drift.binary.DDM(warm_start=self.warm_start, drift_threshold=self.drift_threshold)
        return drift.ADWIN(delta=self.delta, grace_period=self.grace_period)

    def _observe(self, x: Any) -> bool:
        value = float(x)
        if value not in (0.0, 1.0):
            raise ValueError(f"error_rate takes 0 (correct) or 1 (wrong), got {x!r}")
        before = self.statistic
        self._detector.update(value)
        fired = bool(self._detector.drift_detected)
        if fired and self.method == "adwin":
            # ADWIN is two-sided: keep alarms where the recent window's error is above the old mean.
            fired = self.statistic > before
        self._last_mean = self.statistic
        return fired

    @property
    def statistic(self) -> float:
        """The running error rate."""
        if self.method == "ddm":
            return float(self._detector._p.get())
        return float(self._detector.estimation)

    @property
    def window(self) -> int:
        """Observations the estimate covers."""
        if self.method == "ddm":
            return int(self._detector._p.n)
        return int(self._detector.width)
