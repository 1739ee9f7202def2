"""The one drift-detector protocol and the River adapter behind the River-based detectors.

Our own protocol adds ``state_dict``/``load_state`` (plain validated data, never pickles), a name and the
alarm's statistic, so workers can checkpoint detectors; detections are ``DriftEvent`` records.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

from driftline.online.drift.river_state import RiverState, dump_river, load_river
from driftline.online.drift.state import (
    STATE_VERSION,
    DetectorState,
    ParamValue,
    StateMismatchError,
    header,
    parse_state,
)

__all__ = ["STATE_VERSION", "DriftDetector", "RiverDetector", "RiverDetectorState", "StateMismatchError"]


@runtime_checkable
class DriftDetector(Protocol):
    """A streaming change detector over one scalar (or categorical) signal.

    ``update`` returns True exactly on the observation where a change is detected; detectors
    re-baseline themselves afterwards so one change raises one alarm, not a burst.
    """

    name: str

    def update(self, x: Any) -> bool:
        """Feed one observation; True when this observation completes a detected change."""

    @property
    def statistic(self) -> float:
        """The current value of the monitored quantity (mean error, mean confidence, PSI ...)."""
        ...

    @property
    def window(self) -> int:
        """How many observations the current estimate rests on."""
        ...

    @property
    def n_seen(self) -> int:
        """Observations fed since the last reset."""

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON data (no pickles, no NaN), enough to resume after a restart."""

    def load_state(self, state: Any) -> None:
        """Resume from ``state_dict()`` output, validated as untrusted data.

        ``StateMismatchError``, leaving the detector as it was, for a checkpoint of another
        detector, format version or configuration, and for anything that is not valid state.
        """

    def reset(self) -> None:
        """Forget everything seen (a new model version starts fresh)."""


class RiverDetectorState(DetectorState):
    """Checkpoint of a ``RiverDetector``: the header plus the River object's state."""

    river: RiverState


class RiverDetector:
    """Shared plumbing for detectors that wrap one River drift object.

    Subclasses set ``name``, build the River object in ``_make`` from their parameters (listed by
    ``params``) and map an observation to the River input in ``_observe``. Bookkeeping of their own
    goes into a ``RiverDetectorState`` subclass named by ``_state_model``, written by
    ``_extra_state`` and restored by ``_load_extra``.
    """

    name: str = "river"
    _state_model: ClassVar[type[RiverDetectorState]] = RiverDetectorState

    def __init__(self) -> None:
        self._n_seen = 0
        self._detector = self._make()

    def _make(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def params(self) -> dict[str, ParamValue]:  # pragma: no cover - abstract
        """The parameters the River object is built with (a checkpoint must have been written with them)."""
        raise NotImplementedError

    def _extra_state(self) -> dict[str, Any]:
        """Subclass bookkeeping for the checkpoint (fields of ``_state_model``)."""
        return {}

    def _load_extra(self, state: Any) -> None:
        """Restore the subclass bookkeeping from a validated ``_state_model``."""

    def _observe(self, x: Any) -> bool:
        """Feed one value to the River object; return whether it flagged a change we care about."""
        self._detector.update(float(x))
        return bool(self._detector.drift_detected)

    def update(self, x: Any) -> bool:
        """Feed one observation to the River detector; True on a drift."""
        self._n_seen += 1
        return self._observe(x)

    @property
    def n_seen(self) -> int:
        """Observations fed since the last reset."""
        return self._n_seen

    @property
    def statistic(self) -> float:
        """The monitored quantity now."""
        return float(getattr(self._detector, "estimation", 0.0))

    @property
    def window(self) -> int:
        """How many recent observations the statistic covers."""
        return int(getattr(self._detector, "width", 0))

    def reset(self) -> None:
        """Start over with a fresh River detector."""
        self._detector = self._make()

    def state_dict(self) -> dict[str, Any]:
        """The detector's state for the changelogged table: JSON data only."""
        return {
            **header(self.name, self._n_seen, self.params()),
            "river": dump_river(self._detector),
            **self._extra_state(),
        }

    def load_state(self, state: Any) -> None:
        """Resume from ``state_dict()`` output; ``StateMismatchError`` (detector unchanged) if unusable."""
        parsed = parse_state(self._state_model, state, self.name, self.params())
        detector = load_river(self._make(), parsed.river)
        self._load_extra(parsed)
        self._detector, self._n_seen = detector, parsed.n_seen
