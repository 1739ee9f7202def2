"""When a candidate adapter may replace the serving one.

Two tests, both must pass: the candidate must be *better* on held-out recent feedback (the data
that showed the drift) by ``margin``, and *not worse* on the original test set beyond
``tolerance`` (catastrophic forgetting guard). A holdout too small to judge is a rejection, not a
coin flip: promotions are cheap to retry once more feedback has arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from driftline.online.config import PromotionConfig


@dataclass(frozen=True, slots=True)
class Scores:
    """One model's scores on the two evaluation sets (``metric`` values, e.g. accuracy)."""

    recent: float
    original: float


@dataclass(frozen=True, slots=True)
class Decision:
    """The promotion policy's verdict: promote or not, why, and the scores it compared."""

    promote: bool
    reason: str
    metrics: dict[str, Any] = field(default_factory=dict)


def decide(
    policy: PromotionConfig, candidate: Scores, serving: Scores, n_recent_holdout: int, n_original: int
) -> Decision:
    """Promote or reject, with the numbers behind it (stored in the registry and the alert)."""
    gain = candidate.recent - serving.recent
    loss = serving.original - candidate.original
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
        "n_recent_holdout": n_recent_holdout,
        "n_original": n_original,
        # Flat keys read by the analytics view model_versions_metrics (0004_analytics.sql).
        "accuracy" if policy.metric == "accuracy" else "macro_f1": round(candidate.recent, 4),
        "baseline_accuracy" if policy.metric == "accuracy" else "baseline_macro_f1": round(serving.recent, 4),
    }
    if n_recent_holdout < policy.min_holdout:
        return Decision(
            False, f"only {n_recent_holdout} held-out recent labels (< {policy.min_holdout})", metrics
        )
    if gain < policy.margin:
        return Decision(
            False,
            f"{policy.metric} on recent feedback {candidate.recent:.3f} vs serving {serving.recent:.3f}: "
            f"gain {gain:+.3f} below margin {policy.margin}",
            metrics,
        )
    if loss > policy.tolerance:
        return Decision(
            False,
            f"{policy.metric} on the original test set fell {loss:.3f} "
            f"({serving.original:.3f} -> {candidate.original:.3f}), beyond tolerance {policy.tolerance}",
            metrics,
        )
    return Decision(
        True,
        f"{policy.metric} on recent feedback {serving.recent:.3f} -> {candidate.recent:.3f} ({gain:+.3f}); "
        f"original test {serving.original:.3f} -> {candidate.original:.3f}",
        metrics,
    )
