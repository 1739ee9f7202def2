"""Supervised drift: people keep giving a label that the serving version never gets right.

Fires after ``min_labels`` labels of one class with none predicted right: a handful of labels, where the
error-rate detector needs about a hundred.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from pydantic import Field, StrictFloat

from driftline.online.drift.state import (
    MAX_TEXT,
    Count,
    DetectorState,
    ParamValue,
    StateMismatchError,
    Text,
    header,
    parse_state,
)

#: Most distinct labels tracked (feedback labels are outside data; beyond this, new ones are ignored).
MAX_LABELS = 1000


class UnlearnedClassState(DetectorState):
    """Checkpoint of an ``UnlearnedClassDetector``: the labels known, missed so far, and fired."""

    known: Annotated[list[Text], Field(max_length=MAX_LABELS)]
    missed: Annotated[list[tuple[Text, Count]], Field(max_length=MAX_LABELS)]
    fired: Annotated[list[Text], Field(max_length=MAX_LABELS)]
    statistic: Annotated[StrictFloat, Field(ge=0)]


class UnlearnedClassDetector:
    """``update((label, correct))`` per joined feedback: its true label, whether serving was right."""

    name = "unlearned_class"

    def __init__(self, min_labels: int = 5) -> None:
        if min_labels < 1:
            raise ValueError("unlearned_class needs min_labels >= 1")
        self.min_labels = min_labels
        self.reset()

    def reset(self) -> None:
        """Forget every label (a new version has to show again what it knows)."""
        self._known: set[str] = set()
        self._missed: Counter[str] = Counter()
        self._fired: set[str] = set()
        self._statistic = 0.0
        self._n_seen = 0
        self.last_evidence: dict[str, Any] = {}

    def update(self, x: Any) -> bool:
        """Feed one ``(label, correct)``; True when a label reaches ``min_labels`` misses and no hit."""
        if not (isinstance(x, tuple | list) and len(x) == 2):
            raise ValueError(f"unlearned_class takes (label, correct) pairs, got {x!r}")
        label, correct = x
        if not isinstance(label, str) or not isinstance(correct, bool):
            raise ValueError(f"unlearned_class takes (str label, bool correct), got {x!r}")
        self._n_seen += 1
        if label in self._known or label in self._fired or len(label) > MAX_TEXT:
            return False  # (no label is that long: a checkpoint could not hold it)
        if correct:
            self._known.add(label)
            self._missed.pop(label, None)
            return False
        if label not in self._missed and len(self._missed) + len(self._known) >= MAX_LABELS:
            return False
        self._missed[label] += 1
        if self._missed[label] < self.min_labels:
            return False
        self._fired.add(label)
        self._statistic = float(self._missed.pop(label))
        self.last_evidence = {"label": label, "wrong": int(self._statistic), "right": 0}
        return True

    @property
    def statistic(self) -> float:
        """Labels of the last class that fired, every one of them predicted wrong."""
        return self._statistic

    @property
    def window(self) -> int:
        """Labels of classes not shown to be known yet (what the next alarm could rest on)."""
        return sum(self._missed.values())

    @property
    def n_seen(self) -> int:
        """Feedback labels fed since the last reset."""
        return self._n_seen

    def params(self) -> dict[str, ParamValue]:
        """The misses that make a label unlearned (a checkpoint must have been written with it)."""
        return {"min_labels": self.min_labels}

    def state_dict(self) -> dict[str, Any]:
        """JSON data: known labels, misses per label not yet known, labels already fired."""
        return {
            **header(self.name, self._n_seen, self.params()),
            "known": sorted(self._known),
            "missed": [[k, v] for k, v in sorted(self._missed.items())],
            "fired": sorted(self._fired),
            "statistic": float(self._statistic),
        }

    def load_state(self, state: Any) -> None:
        """Resume from ``state_dict()`` output; ``StateMismatchError`` (detector unchanged) if unusable."""
        parsed = parse_state(UnlearnedClassState, state, self.name, self.params())
        missed = Counter(dict(parsed.missed))
        if len(missed) != len(parsed.missed):
            raise StateMismatchError("unlearned_class checkpoint lists a label twice")
        if any(count >= self.min_labels or count < 1 for count in missed.values()):
            raise StateMismatchError("unlearned_class checkpoint holds a miss count it could not have")
        known, fired = set(parsed.known), set(parsed.fired)
        if (known & fired) or (known & set(missed)) or (fired & set(missed)):
            raise StateMismatchError("unlearned_class checkpoint puts a label in two states")
        if len(known) + len(missed) > MAX_LABELS:
            raise StateMismatchError(f"unlearned_class checkpoint tracks more than {MAX_LABELS} labels")
        self._n_seen = parsed.n_seen
        self._known, self._missed, self._fired = known, missed, fired
        self._statistic = parsed.statistic
