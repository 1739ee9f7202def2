"""After a promotion: watch the new version's live accuracy; a significant drop rolls it back.

Wald's SPRT on the outcomes since the promotion (labels, or CBPE estimates without them); the verdict is a
pure function of those outcomes, so the watch keeps no state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from driftline.online.config import RollbackConfig

WatchState = Literal["rollback", "cleared", "watching"]
Evidence = Literal["labels", "estimate"]


@dataclass(frozen=True)
class WatchReading:
    """Where the SPRT stands after the outcomes it read."""

    decision: WatchState
    labels: int  # outcomes read until the decision (all of them while watching)
    correct: float  # right answers; with estimated outcomes, the sum of their probabilities
    baseline: float
    llr: float
    upper: float  # rollback bound
    lower: float  # cleared bound
    kind: Evidence = "labels"

    @property
    def live_accuracy(self) -> float | None:
        """Accuracy on the outcomes read (estimated accuracy for ``kind`` "estimate")."""
        return self.correct / self.labels if self.labels else None

    def evidence(self) -> dict[str, float | int | str | None]:
        """The numbers behind the verdict, for the alert and the registry."""
        accuracy = None if self.live_accuracy is None else round(self.live_accuracy, 4)
        if self.kind == "estimate":
            return {
                "estimate_decision": self.decision,
                "estimate_events": self.labels,
                "estimated_accuracy": accuracy,
                "baseline_estimated_accuracy": round(self.baseline, 4),
                "estimate_llr": round(self.llr, 4),
                "upper": round(self.upper, 4),
                "lower": round(self.lower, 4),
            }
        return {
            "watch_decision": self.decision,
            "watch_labels": self.labels,
            "watch_correct": int(self.correct),
            "live_accuracy": accuracy,
            "baseline_accuracy": round(self.baseline, 4),
            "llr": round(self.llr, 4),
            "upper": round(self.upper, 4),
            "lower": round(self.lower, 4),
        }

    def why(self, previous_version: int, config: RollbackConfig) -> str:
        """The rollback's reason, in words."""
        if self.kind == "estimate":
            return (
                f"estimated accuracy {self.live_accuracy:.3f} on {self.labels} predictions (no labels "
                f"needed) is significantly below version {previous_version}'s {self.baseline:.3f} "
                f"(SPRT for a drop of {config.estimate_drop}, alpha {config.alpha})"
            )
        return (
            f"live accuracy {self.live_accuracy:.3f} on {self.labels} labels is significantly below "
            f"version {previous_version}'s {self.baseline:.3f} (SPRT for a drop of {config.drop}, "
            f"alpha {config.alpha})"
        )


def sprt(
    outcomes: Sequence[float], baseline: float, config: RollbackConfig, kind: Evidence = "labels"
) -> WatchReading:
    """The SPRT verdict on ``outcomes``, oldest first.

    "labels": True / 1 where the version was right, against ``config.drop``, for at most
    ``max_labels`` outcomes. "estimate": each outcome the calibrated probability that the version
    was right, against ``config.estimate_drop``, for at most ``estimate_max_events``.
    """
    drop = config.estimate_drop if kind == "estimate" else config.drop
    limit = config.estimate_max_events if kind == "estimate" else config.max_labels
    p0 = min(max(baseline, drop + 0.01), 0.99)  # both hypotheses strictly inside (0, 1)
    p1 = p0 - drop
    right, wrong = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
    upper = math.log((1 - config.beta) / config.alpha)
    lower = math.log(config.beta / (1 - config.alpha))
    llr, correct = 0.0, 0.0
    for n, outcome in enumerate(outcomes[:limit], start=1):
        t = min(max(float(outcome), 0.0), 1.0)
        correct += t
        llr += t * right + (1 - t) * wrong
        if llr >= upper:
            return WatchReading("rollback", n, correct, baseline, llr, upper, lower, kind)
        if llr <= lower:
            return WatchReading("cleared", n, correct, baseline, llr, upper, lower, kind)
    read = min(len(outcomes), limit)
    decision: WatchState = "cleared" if read >= limit else "watching"
    return WatchReading(decision, read, correct, baseline, llr, upper, lower, kind)
