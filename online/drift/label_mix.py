"""Unsupervised drift: the mix of predicted labels moves away from a reference window.

An emerging topic shows up as a changed label mix even when confidence holds (the model confidently
files entertainment news under business). Population Stability Index between a reference window and
a sliding current window is cheap, interpretable ("0.1 = some shift, 0.25 = major") and, with a
window of a few hundred, practically free of false alarms on a stationary stream. After an alarm
the current window becomes the new reference, so one shift raises one alarm.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from typing import Any

from scipy.stats import chi2_contingency

from driftline.online.drift.base import STATE_VERSION, StateMismatchError


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
    """``update(label)`` with the predicted label (any hashable JSON scalar)."""

    name = "label_mix"

    def __init__(
        self, reference_size: int = 300, window_size: int = 200, check_every: int = 10, threshold: float = 0.2
    ) -> None:
        if reference_size < 10 or window_size < 10 or check_every < 1:
            raise ValueError("label_mix needs reference_size and window_size >= 10, check_every >= 1")
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

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state: both windows and counters."""
        return {
            "format": STATE_VERSION,
            "name": self.name,
            "n_seen": self._n_seen,
            "reference": [[k, v] for k, v in self._reference.items()],
            "current": list(self._current),
            "since_check": self._since_check,
            "psi": self._psi,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Resume from ``state_dict()`` output."""
        if state.get("name") != self.name or state.get("format") != STATE_VERSION:
            raise StateMismatchError(f"checkpoint is for {state.get('name')!r}, not {self.name!r}")
        self._n_seen = int(state["n_seen"])
        self._reference = Counter({k: v for k, v in state["reference"]})
        self._current = deque(state["current"], maxlen=self.window_size)
        self._since_check = int(state["since_check"])
        self._psi = float(state["psi"])
