"""The one drift-detector protocol and the River adapter behind every detector.

A detection is a ``driftline.schema.records.DriftEvent`` (the record the alerts topic and the
``drift_events`` table share).

Why a protocol of our own on top of River: the streams layer keeps detector state in a Faust table
(or a ClickHouse/Kafka checkpoint) so a worker restart does not forget a half-built window. That
needs every detector to expose ``state_dict``/``load_state`` with JSON-safe values, plus a name and
the statistic that explains an alarm. River objects pickle cleanly, so the adapter stores them as
base64 pickles; scalar bookkeeping sits beside them as plain JSON.
"""

from __future__ import annotations

import base64
import pickle
from typing import Any, Protocol, runtime_checkable

STATE_VERSION = 1


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
        """JSON-ready state, enough to resume after a restart."""

    def load_state(self, state: dict[str, Any]) -> None:
        """Resume from ``state_dict()`` output (``StateMismatchError`` if it is another detector's)."""

    def reset(self) -> None:
        """Forget everything seen (a new model version starts fresh)."""


def pickle_b64(obj: object) -> str:
    """Base64 of a pickled River object, for state this process wrote itself."""
    return base64.b64encode(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).decode("ascii")


def unpickle_b64(data: str) -> Any:
    """Inverse of ``pickle_b64``."""
    # Only ever fed our own checkpoints (Faust table / ClickHouse row written by this code).
    return pickle.loads(base64.b64decode(data.encode("ascii")))


class StateMismatchError(ValueError):
    """A checkpoint written by a different detector (or format) was offered to ``load_state``."""


class RiverDetector:
    """Shared plumbing for detectors that wrap one River drift object.

    Subclasses set ``name``, build the River object in ``_make`` and map an observation to the
    River input in ``_observe``. Bookkeeping fields listed in ``_extra_state`` are saved as JSON.
    """

    name: str = "river"
    _extra_state: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._n_seen = 0
        self._detector = self._make()

    def _make(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

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
        """The detector's state for the changelogged table."""
        return {
            "format": STATE_VERSION,
            "name": self.name,
            "n_seen": self._n_seen,
            "river": pickle_b64(self._detector),
            "extra": {key: getattr(self, key) for key in self._extra_state},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Resume from ``state_dict()`` output."""
        if state.get("name") != self.name or state.get("format") != STATE_VERSION:
            raise StateMismatchError(
                f"checkpoint is for {state.get('name')!r} format {state.get('format')!r}, "
                f"not {self.name!r} format {STATE_VERSION}"
            )
        self._n_seen = int(state["n_seen"])
        self._detector = unpickle_b64(state["river"])
        for key, value in state.get("extra", {}).items():
            setattr(self, key, value)
