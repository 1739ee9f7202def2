"""After a promotion: watch the new version's live accuracy; a significant drop rolls it back.

The offline gate decides on a few dozen held-out labels. What it cannot see shows up in the
feedback joined to the new version's predictions, one right-or-wrong outcome per label. The watch
runs Wald's sequential probability ratio test (SPRT) on those outcomes, in the order they were
joined:

- H0: the new version is as accurate as the baseline ``p0``;
- H1: it is ``drop`` worse (``p1 = p0 - drop``).

The log-likelihood ratio moves by ``log(p1/p0)`` per right answer and ``log((1-p1)/(1-p0))`` per
wrong one. Crossing ``log((1-beta)/alpha)`` is a significant drop: roll back. Crossing
``log(beta/(1-alpha))`` clears the version, and the watch ends. So does ``max_labels`` outcomes
without a verdict. ``alpha`` bounds false rollbacks, ``beta`` missed drops of ``drop`` or more. A bad
version needs only a handful of labels: four wrong answers in a row already cross the bound at
``p0 = 0.9``.

The baseline is the previous version's accuracy on the recent holdout the gate scored both
versions on (the decision's ``baseline_accuracy``). Those labels came after the drift, so a stream
that changed does not make a good promotion look bad against the old version's pre-drift record.
A version promoted by hand has no decision; its baseline is the previous version's live accuracy
over its last ``baseline_window`` labels.

The verdict is a pure function of the labels since the promotion, so the watch keeps no state of
its own: a restarted updater reads them again and reaches the same verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from driftline.online.config import RollbackConfig

Decision = Literal["rollback", "cleared", "watching"]


@dataclass(frozen=True)
class Verdict:
    """Where the SPRT stands after the outcomes it read."""

    decision: Decision
    labels: int  # outcomes read until the decision (all of them while watching)
    correct: int
    baseline: float
    llr: float
    upper: float  # rollback bound
    lower: float  # cleared bound

    @property
    def live_accuracy(self) -> float | None:
        """Accuracy on the outcomes read."""
        return self.correct / self.labels if self.labels else None

    def evidence(self) -> dict[str, float | int | str | None]:
        """The numbers behind the verdict, for the alert and the registry."""
        return {
            "watch_decision": self.decision, "watch_labels": self.labels, "watch_correct": self.correct,
            "live_accuracy": None if self.live_accuracy is None else round(self.live_accuracy, 4),
            "baseline_accuracy": round(self.baseline, 4), "llr": round(self.llr, 4),
            "upper": round(self.upper, 4), "lower": round(self.lower, 4),
        }  # fmt: skip


def sprt(outcomes: Sequence[bool], baseline: float, config: RollbackConfig) -> Verdict:
    """The SPRT verdict on ``outcomes`` (True: the version was right), oldest first."""
    p0 = min(max(baseline, config.drop + 0.01), 0.99)  # both hypotheses strictly inside (0, 1)
    p1 = p0 - config.drop
    right, wrong = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
    upper = math.log((1 - config.beta) / config.alpha)
    lower = math.log(config.beta / (1 - config.alpha))
    llr, correct = 0.0, 0
    for n, outcome in enumerate(outcomes[: config.max_labels], start=1):
        correct += bool(outcome)
        llr += right if outcome else wrong
        if llr >= upper:
            return Verdict("rollback", n, correct, baseline, llr, upper, lower)
        if llr <= lower:
            return Verdict("cleared", n, correct, baseline, llr, upper, lower)
    read = min(len(outcomes), config.max_labels)
    decision: Decision = "cleared" if read >= config.max_labels else "watching"
    return Verdict(decision, read, correct, baseline, llr, upper, lower)
