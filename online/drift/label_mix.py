"""Unsupervised drift: the mix of predicted labels moves away from a reference window.

Population Stability Index between a reference and a sliding window; one shift raises one alarm.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from typing import Annotated, Any

from pydantic import Field, StrictBool, StrictFloat, StrictInt
from scipy.stats import chi2_contingency

from driftline.online.drift.state import (
    DetectorState,
    ParamValue,
    StateMismatchError,
    Text,
    header,
    parse_state,
)

#: Most labels a checkpoint's windows may hold (the configured sizes are checked on top of this).
MAX_WINDOW = 100_000

Label = Text | StrictInt | StrictFloat | StrictBool | None
LabelCount = Annotated[StrictInt, Field(ge=1, le=MAX_WINDOW)]


class LabelMixState(DetectorState):
    """Checkpoint of a ``LabelMixDetector``: both windows, in JSON form."""

    reference: Annotated[list[tuple[Label, LabelCount]], Field(max_length=MAX_WINDOW)]
    current: Annotated[list[Label], Field(max_length=MAX_WINDOW)]
    since_check: Annotated[StrictInt, Field(ge=0, le=MAX_WINDOW)]
    psi: Annotated[StrictFloat, Field(ge=0)]


def population_stability_index(reference: Counter, current: Counter, smoothing: float = 0.5) -> float:
    """PSI over the union of categories; ``smoothing`` pseudo-counts keep empty cells finite.

    Written here: neither scipy nor River has PSI, and it is five lines.
    """
    categories = set(reference) | set(current)
    ref_total = sum(reference.values()) + smoothing * len(categories)
    cur_total = sum(current.values()) + smoothing * len(categories)
    psi = 0.0
    for category in categories:
        r = (reference.get(category, 0) + smoothing) / ref_total
        c = (current.get(category, 0) + smoothing) / cur_total
        psi += (c - r) * math.log(c / r)
    return psi


def chi_square_p_value(reference: Counter, current: Counter) -> float:
    """Two-sample chi-square homogeneity test p-value (reported as evidence, not used to decide)."""
    categories = [c for c in sorted(set(reference) | set(current), key=str) if reference[c] + current[c] > 0]
    if len(categories) < 2 or sum(reference.values()) == 0 or sum(current.values()) == 0:
        return 1.0
    table = [[reference[c] for c in categories], [current[c] for c in categories]]
    return float(chi2_contingency(table, correction=False).pvalue)


class LabelMixDetector:
    """``update(label)`` with the predicted label: a JSON scalar (the monitor passes strings).

    Checkpoints keep labels as they are; one holding a string label over 256 characters
    (``state.MAX_TEXT``) is refused on restore.
    """

    name = "label_mix"

    def __init__(
        self, reference_size: int = 300, window_size: int = 200, check_every: int = 10, threshold: float = 0.2
    ) -> None:
        if reference_size < 10 or window_size < 10 or check_every < 1:
            raise ValueError("label_mix needs reference_size and window_size >= 10, check_every >= 1")
        if max(reference_size, window_size, check_every) > MAX_WINDOW:
            raise ValueError(f"label_mix windows and check_every take at most {MAX_WINDOW} labels")
        self.reference_size = reference_size
        self.window_size = window_size
        self.check_every = check_every
        self.threshold = threshold
        self.reset()
        self._n_seen = 0

    def reset(self) -> None:
        """Empty both windows."""
        self._reference: Counter = Counter()
        self._current: deque = deque(maxlen=self.window_size)
        self._since_check = 0
        self._psi = 0.0
        self.last_evidence: dict[str, Any] = {}

    def update(self, x: Any) -> bool:
        """Feed one predicted label; True when the mix moved past the threshold (PSI)."""
        self._n_seen += 1
        if sum(self._reference.values()) < self.reference_size:
            self._reference[x] += 1
            return False
        self._current.append(x)
        self._since_check += 1
        if len(self._current) < self.window_size or self._since_check < self.check_every:
            return False
        self._since_check = 0
        current = Counter(self._current)
        self._psi = population_stability_index(self._reference, current)
        if self._psi < self.threshold:
            return False
        self.last_evidence = {
            "psi": self._psi,
            "chi2_p_value": chi_square_p_value(self._reference, current),
            "reference": {str(k): v for k, v in self._reference.items()},
            "current": {str(k): v for k, v in current.items()},
        }
        self._reference = current
        self._current.clear()
        return True

    @property
    def statistic(self) -> float:
        """The last PSI computed."""
        return self._psi

    @property
    def window(self) -> int:
        """Size of the current window."""
        return len(self._current)

    @property
    def n_seen(self) -> int:
        """Labels fed since the last reset."""
        return self._n_seen

    def params(self) -> dict[str, ParamValue]:
        """The window sizes and threshold (a checkpoint must have been written with them)."""
        return {
            "reference_size": self.reference_size,
            "window_size": self.window_size,
            "check_every": self.check_every,
            "threshold": self.threshold,
        }

    def state_dict(self) -> dict[str, Any]:
        """JSON data: both windows (the reference as ``[label, count]`` pairs) and the counters."""
        return {
            **header(self.name, self._n_seen, self.params()),
            "reference": [[k, v] for k, v in self._reference.items()],
            "current": list(self._current),
            "since_check": self._since_check,
            "psi": float(self._psi),
        }

    def load_state(self, state: Any) -> None:
        """Resume from ``state_dict()`` output; ``StateMismatchError`` (detector unchanged) if unusable."""
        parsed = parse_state(LabelMixState, state, self.name, self.params())
        reference = Counter(dict(parsed.reference))
        if len(reference) != len(parsed.reference):
            raise StateMismatchError("label_mix checkpoint lists a reference label twice")
        if sum(reference.values()) > max(self.reference_size, self.window_size):
            raise StateMismatchError(
                "label_mix checkpoint's reference holds more labels than the windows take"
            )
        if len(parsed.current) > self.window_size:
            raise StateMismatchError(
                f"label_mix checkpoint's window holds more than {self.window_size} labels"
            )
        if parsed.since_check > max(self.window_size, self.check_every):
            raise StateMismatchError("label_mix checkpoint counts more labels since the last check than fit")
        self._n_seen = parsed.n_seen
        self._reference = reference
        self._current = deque(parsed.current, maxlen=self.window_size)
        self._since_check = parsed.since_check
        self._psi = parsed.psi
