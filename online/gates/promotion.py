"""When a candidate adapter may replace the serving one: a gate that decides on evidence.

Candidate and serving are scored on the same held-out texts (paired, exact McNemar test); verdicts are
``promote``, ``reject`` and ``wait``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from scipy.stats import binomtest

from driftline.online.config import PromotionConfig


class Verdict(StrEnum):
    """What the gate says about a candidate."""

    PROMOTE = "promote"
    REJECT = "reject"
    WAIT = "wait"


@dataclass(frozen=True, slots=True)
class Scores:
    """One model's scores on the two evaluation sets (``metric`` values, e.g. accuracy)."""

    recent: float
    original: float


@dataclass(frozen=True, slots=True)
class Paired:
    """Candidate against serving on the same held-out texts: who was right where they differ."""

    n: int  # texts compared
    candidate_only: int  # the candidate right, serving wrong
    serving_only: int  # serving right, the candidate wrong

    @classmethod
    def of(cls, candidate_correct: Sequence[bool], serving_correct: Sequence[bool]) -> Paired:
        """Count the discordant pairs of two equally long correctness vectors."""
        if len(candidate_correct) != len(serving_correct):
            raise ValueError("paired scores need the same texts for both models")
        pairs = list(zip(candidate_correct, serving_correct, strict=True))
        return cls(
            len(pairs),
            sum(1 for c, s in pairs if c and not s),
            sum(1 for c, s in pairs if s and not c),
        )

    def p_better(self) -> float:
        """One-sided exact McNemar p-value for "the candidate is more often right"."""
        return _more_often(self.candidate_only, self.serving_only)

    def p_worse(self) -> float:
        """One-sided exact McNemar p-value for "the candidate is more often wrong"."""
        return _more_often(self.serving_only, self.candidate_only)

    def more_to_show(self, alpha: float, limit: int = 1000) -> int | None:
        """About how many more held-out texts would make the candidate's lead significant at ``alpha``.

        A projection: more texts disagree at the rate seen so far, and the candidate wins the same
        share of them. None when the candidate is not ahead (no number of texts like these would
        show a gain) or not within ``limit`` texts.
        """
        wins, losses = self.candidate_only, self.serving_only
        if wins <= losses or self.n == 0:
            return None
        rate, share = (wins + losses) / self.n, wins / (wins + losses)
        for more in range(limit + 1):
            extra = more * rate
            if _more_often(round(wins + extra * share), round(losses + extra * (1 - share))) < alpha:
                return more
        return None


def _more_often(wins: int, losses: int) -> float:
    """P(at least ``wins`` of the discordant pairs) if either side were as likely to win each."""
    if wins + losses == 0:
        return 1.0
    return float(binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue)


@dataclass(frozen=True, slots=True)
class Decision:
    """The gate's verdict, why, and the numbers behind it (stored in the registry and the alert)."""

    verdict: Verdict
    reason: str
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def promote(self) -> bool:
        """The candidate may serve."""
        return self.verdict is Verdict.PROMOTE

    @property
    def wait(self) -> bool:
        """Not enough evidence either way yet: judge again with more labels."""
        return self.verdict is Verdict.WAIT


def too_few(policy: PromotionConfig, n_holdout: int) -> Decision:
    """The verdict before any training: the holdout is too small to judge a candidate on."""
    return Decision(
        Verdict.WAIT,
        f"only {n_holdout} held-out labels from after the drift (< {policy.min_holdout}); "
        "waiting for more feedback",
        {"n_recent_holdout": n_holdout, "min_holdout": policy.min_holdout},
    )


def too_few_recent(n: int, needed: int) -> Decision:
    """The verdict before any training when fewer labels are stored than ``min_new_labels`` (``needed``).

    The trigger counts labels on the feedback topic, the store holds them a little later: the drift
    is kept and the update retried, never dropped for labels that are on their way.
    """
    return Decision(
        Verdict.WAIT,
        f"only {n} labelled recent events (< {needed}); waiting for more feedback",
        {"n_recent": n, "min_new_labels": needed},
    )


def wins_to_show(alpha: float) -> int:
    """The fewest held-out texts a candidate must win (losing none) for the paired test to show a gain."""
    wins = 1
    while _more_often(wins, 0) >= alpha:
        wins += 1
    return wins


def no_room(policy: PromotionConfig, serving_correct: Sequence[bool]) -> Decision | None:
    """The verdict before any training when no candidate could show a gain on this holdout, else None.

    A candidate can only win a held-out text that serving got wrong. With fewer such texts than
    ``wins_to_show``, even a candidate right on every one of them would wait, so training one is
    wasted time, and the labels that arrive meanwhile are labels the next try did not need. The
    projection asks for the held-out texts that, at the error rate seen, would bring enough of them.
    """
    n, wrong = len(serving_correct), sum(not c for c in serving_correct)
    needed = wins_to_show(1.0 - policy.confidence)
    if wrong >= needed:
        return None
    more = math.ceil((needed - wrong) * n / wrong) if wrong else None
    return Decision(
        Verdict.WAIT,
        f"serving got {wrong} of {n} held-out labels from after the drift wrong; a candidate can only "
        f"win there and needs {needed} wins to show a gain at {policy.confidence:.0%}; waiting for more "
        "feedback",
        {"n_recent_holdout": n, "serving_wrong": wrong, "wins_needed": needed, "more_holdout_to_show": more},
    )


def decide(
    policy: PromotionConfig,
    candidate: Scores,
    serving: Scores,
    paired: Paired,
    n_original: int,
) -> Decision:
    """Promote, reject or wait, with the evidence behind it."""
    gain = candidate.recent - serving.recent
    loss = serving.original - candidate.original
    alpha = 1.0 - policy.confidence
    p_better, p_worse = paired.p_better(), paired.p_worse()
    metrics = {
        "metric": policy.metric,
        "candidate_recent": round(candidate.recent, 4),
        "serving_recent": round(serving.recent, 4),
        "candidate_original": round(candidate.original, 4),
        "serving_original": round(serving.original, 4),
        "recent_gain": round(gain, 4),
        "original_loss": round(loss, 4),
        "margin": policy.margin,
        "tolerance": policy.tolerance,
        "confidence": policy.confidence,
        "n_recent_holdout": paired.n,
        "candidate_only_right": paired.candidate_only,
        "serving_only_right": paired.serving_only,
        "p_better": round(p_better, 6),
        "p_worse": round(p_worse, 6),
        "n_original": n_original,
        # Flat keys read by the analytics view model_versions_metrics (0004_analytics.sql).
        "accuracy" if policy.metric == "accuracy" else "macro_f1": round(candidate.recent, 4),
        "baseline_accuracy" if policy.metric == "accuracy" else "baseline_macro_f1": round(serving.recent, 4),
    }
    versus = (
        f"{policy.metric} on recent feedback {serving.recent:.3f} -> {candidate.recent:.3f} ({gain:+.3f})"
    )
    evidence = (
        f"{paired.candidate_only} texts only the candidate got right, {paired.serving_only} only serving, "
        f"of {paired.n}"
    )
    if paired.n < policy.min_holdout:
        decision = too_few(policy, paired.n)
        return Decision(decision.verdict, decision.reason, metrics)
    if loss > policy.tolerance:
        return Decision(
            Verdict.REJECT,
            f"{policy.metric} on the original test set fell {loss:.3f} "
            f"({serving.original:.3f} -> {candidate.original:.3f}), beyond tolerance {policy.tolerance}",
            metrics,
        )
    if p_worse < alpha:
        worse = f"{versus}: significantly worse (p={p_worse:.3g}; {evidence})"
        return Decision(Verdict.REJECT, worse, metrics)
    if p_better < alpha and gain >= policy.margin:
        return Decision(
            Verdict.PROMOTE,
            f"{versus}, p={p_better:.3g} ({evidence}); original test {serving.original:.3f} -> "
            f"{candidate.original:.3f}",
            metrics,
        )
    short = f"gain {gain:+.3f} not shown at {policy.confidence:.0%} (p={p_better:.3g}; {evidence})"
    if paired.n >= policy.max_holdout:
        return Decision(Verdict.REJECT, f"{versus}: {short} on a full holdout of {paired.n}", metrics)
    metrics["more_holdout_to_show"] = paired.more_to_show(alpha)
    return Decision(Verdict.WAIT, f"{versus}: {short}; waiting for more feedback", metrics)
