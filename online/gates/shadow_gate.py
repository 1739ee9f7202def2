"""The shadow decision: may a candidate that passed the offline gate serve, on live evidence?

``judge_shadow`` weighs agreement on mirrored events and paired accuracy on live feedback; it asks only
"not worse", since the offline gate already asked for a gain.
"""

from __future__ import annotations

from dataclasses import dataclass

from driftline.online.config import ShadowConfig
from driftline.online.gates.promotion import Decision, Paired, Verdict


@dataclass(frozen=True)
class ShadowEvidence:
    """What the shadow period showed so far."""

    elapsed_s: float
    mirrored: int  # mirrored events with a shadow answer
    agreed: int  # of them, the shadow gave serving's label
    paired: Paired  # shadow ("candidate") against serving on the shadow-period feedback
    shadow_right: int
    serving_right: int

    @property
    def agreement(self) -> float | None:
        """Share of mirrored events where the shadow agreed with serving."""
        return self.agreed / self.mirrored if self.mirrored else None

    def metrics(self) -> dict[str, float | int | None]:
        """The numbers, as stored with the decision (registry row and alert)."""
        n = self.paired.n
        return {
            "shadow_elapsed_s": round(self.elapsed_s, 1),
            "shadow_mirrored": self.mirrored,
            "shadow_agreement": None if self.agreement is None else round(self.agreement, 4),
            "shadow_graded": n,
            "shadow_accuracy": round(self.shadow_right / n, 4) if n else None,
            "shadow_serving_accuracy": round(self.serving_right / n, 4) if n else None,
            "shadow_only_right": self.paired.candidate_only,
            "shadow_serving_only_right": self.paired.serving_only,
            "shadow_p_worse": round(self.paired.p_worse(), 6),
        }


def judge_shadow(evidence: ShadowEvidence, config: ShadowConfig) -> Decision:
    """Promote, reject or wait (see the module)."""
    metrics = evidence.metrics()
    n = evidence.paired.n
    enough_traffic = evidence.mirrored >= config.min_events or evidence.elapsed_s >= config.min_time_s
    if not enough_traffic or n < config.min_labels:
        if evidence.elapsed_s >= config.max_time_s:
            return Decision(
                Verdict.REJECT,
                f"shadow: too little live evidence in {config.max_time_s:.0f} s "
                f"({evidence.mirrored} mirrored events, {n} labels; needs {config.min_events} events "
                f"or {config.min_time_s:.0f} s, and {config.min_labels} labels)",
                metrics,
            )
        return Decision(
            Verdict.WAIT,
            f"shadow: {evidence.mirrored} mirrored events, {n} labels in {evidence.elapsed_s:.0f} s; waiting "
            f"for {config.min_events} events or {config.min_time_s:.0f} s, and {config.min_labels} labels",
            metrics,
        )
    agreement = evidence.agreement
    if agreement is not None and agreement < config.min_agreement:
        return Decision(
            Verdict.REJECT,
            f"shadow: agrees with serving on {agreement:.1%} of {evidence.mirrored} mirrored events "
            f"(< {config.min_agreement:.0%})",
            metrics,
        )
    shadow_acc, serving_acc = evidence.shadow_right / n, evidence.serving_right / n
    alpha = 1 - config.confidence
    if evidence.paired.p_worse() < alpha or shadow_acc < serving_acc - config.tolerance:
        return Decision(
            Verdict.REJECT,
            f"shadow: accuracy {shadow_acc:.3f} against serving's {serving_acc:.3f} on {n} live labels "
            f"(p worse {evidence.paired.p_worse():.3g}, tolerance {config.tolerance})",
            metrics,
        )
    agreed = "no mirrored events" if agreement is None else f"agreement {agreement:.1%}"
    return Decision(
        Verdict.PROMOTE,
        f"shadow: accuracy {shadow_acc:.3f} against serving's {serving_acc:.3f} on {n} live labels, {agreed}",
        metrics,
    )
