"""Surge alerts: a subject's share of its window's traffic, and its count, against earlier windows.

Share and count must both rise, so a uniform rise in traffic fires nothing; state: two windowed Faust tables.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faust

from driftline.schema.records import AlertRecord, PredictionRecord
from driftline.settings import SurgeSettings

KIND_BY_EVENT = {"news": "topic_volume_surge", "chat": "negative_sentiment_surge"}
MIN_HISTORY = 2


def subject_of(kind: str, label: str, channel: str, settings: SurgeSettings) -> str:
    """The alert subject an event counts towards; "" when it counts towards none (positive chat)."""
    if kind == "news":
        return label
    if kind == "chat":
        return channel if label in settings.negative_labels else ""
    return ""


def share_group(record: PredictionRecord) -> str:
    """The traffic a subject's share is taken of: the chat channel, or the whole news task."""
    if record.event_kind == "chat":
        return f"{record.task}|{record.channel}"
    if record.event_kind == "news":
        return f"{record.task}|"
    return f"{record.task}|{record.subject or record.channel}"


def prediction_key(record: PredictionRecord) -> str:
    """The predictions-topic key: the share group, so a share's count and total meet on one worker."""
    return share_group(record)


def ewma_weights(n: int, alpha: float) -> list[float]:
    """Weights of ``n`` values (oldest first) in their exponentially weighted mean; they sum to 1."""
    if n <= 0:
        return []
    return [(1.0 - alpha) ** (n - 1)] + [alpha * (1.0 - alpha) ** (n - 1 - j) for j in range(1, n)]


def ewma(values_oldest_first: Sequence[float], alpha: float) -> float:
    """Exponentially weighted mean, oldest value first."""
    weights = ewma_weights(len(values_oldest_first), alpha)
    return sum(w * float(v) for w, v in zip(weights, values_oldest_first, strict=True))


def effective_windows(n: int, alpha: float) -> float:
    """Kish's effective sample size of ``n`` EWMA-weighted windows: 1 / sum(w^2)."""
    weights = ewma_weights(n, alpha)
    return 1.0 / sum(w * w for w in weights) if weights else 0.0


def share_needed(baseline_share: float, ratio: float) -> float:
    """The share whose odds are ``ratio`` x the baseline share's odds (1.0 when none can be)."""
    if baseline_share >= 1.0:
        return 1.0
    odds = ratio * baseline_share / (1.0 - baseline_share)
    return odds / (1.0 + odds)


def share_rise_p_value(count: int, total: int, baseline_share: float, baseline_n: float) -> float:
    """One-sided two-proportion z-test: p-value of ``count / total`` exceeding the baseline share."""
    if total <= 0 or baseline_n <= 0:
        return 1.0
    share = count / total
    pooled = (count + baseline_share * baseline_n) / (total + baseline_n)
    variance = pooled * (1.0 - pooled) * (1.0 / total + 1.0 / baseline_n)
    if variance <= 0.0:  # both shares 0 or both 1: no rise
        return 1.0
    z = (share - baseline_share) / math.sqrt(variance)
    return 0.5 * math.erfc(z / math.sqrt(2.0))


@dataclass(frozen=True)
class WindowCounts:
    """One window's events of a subject (``count``) and of its share group (``total``)."""

    count: int
    total: int

    @property
    def share(self) -> float:
        """The subject's share of the window (0.0 for an empty window)."""
        return self.count / self.total if self.total else 0.0


@dataclass(frozen=True)
class SurgeDecision:
    """Whether a window's share and count are a surge, and the numbers behind it."""

    fire: bool
    count: int
    total: int
    baseline_share: float
    baseline_count: float
    baseline_total: float
    threshold: float  # the share the window needs (odds ratio)
    p_value: float
    history_windows: int
    why: str

    @property
    def share(self) -> float:
        """The subject's share of the window."""
        return self.count / self.total if self.total else 0.0

    @property
    def odds_ratio(self) -> float | None:
        """The window's share odds over the baseline's; None when unbounded (window share 1, baseline 0)."""
        share, base = self.share, self.baseline_share
        if share >= 1.0 or base <= 0.0:
            return None
        if base >= 1.0:
            return 0.0
        return (share / (1.0 - share)) / (base / (1.0 - base))


def evaluate_surge(
    current: WindowCounts, previous_newest_first: Sequence[WindowCounts], settings: SurgeSettings
) -> SurgeDecision:
    """Decide whether the current window is a surge over the previous windows (see module docstring)."""
    history = [w for w in list(previous_newest_first)[: settings.baseline_windows] if w.total > 0]
    oldest_first = history[::-1]
    base_count = ewma([w.count for w in oldest_first], settings.ewma_alpha)
    base_total = ewma([w.total for w in oldest_first], settings.ewma_alpha)
    base_share = base_count / base_total if base_total > 0 else 0.0
    baseline_n = base_total * effective_windows(len(history), settings.ewma_alpha)
    threshold = share_needed(base_share, settings.ratio)
    p_value = share_rise_p_value(current.count, current.total, base_share, baseline_n)
    share = current.share

    def decide(fire: bool, why: str) -> SurgeDecision:
        return SurgeDecision(
            fire,
            current.count,
            current.total,
            base_share,
            base_count,
            base_total,
            threshold,
            p_value,
            len(history),
            why,
        )

    if len(history) < MIN_HISTORY:
        return decide(False, f"not enough history ({len(history)} non-empty windows < {MIN_HISTORY})")
    if current.count < settings.min_count:
        return decide(False, f"count {current.count} < min_count {settings.min_count}")
    if share < threshold or share <= base_share:
        return decide(
            False,
            f"share {share:.3f} < {threshold:.3f} ({settings.ratio:g}x baseline odds of {base_share:.3f})",
        )
    if p_value > settings.max_p_value:
        return decide(False, f"share rise not significant (p={p_value:.2g} > {settings.max_p_value:g})")
    return decide(
        True,
        f"share {share:.3f} >= {threshold:.3f} ({settings.ratio:g}x baseline odds of {base_share:.3f}), "
        f"p={p_value:.2g} <= {settings.max_p_value:g}, count {current.count} >= {settings.min_count}",
    )


def window_start(ts_s: float, window_s: float) -> float:
    """Start of the tumbling window holding ``ts_s``."""
    return math.floor(ts_s / window_s) * window_s


def surge_alert(
    record: PredictionRecord,
    event_kind: str,
    decision: SurgeDecision,
    start_s: float,
    settings: SurgeSettings,
    samples: list[str],
) -> AlertRecord:
    """The alert record for a detected surge."""
    kind = KIND_BY_EVENT[event_kind]
    alert_id = hashlib.sha1(f"{kind}|{record.task}|{record.subject}|{int(start_s)}".encode()).hexdigest()[:20]
    odds_ratio = decision.odds_ratio
    evidence: dict[str, Any] = {
        "count": decision.count,
        "total": decision.total,
        "share": round(decision.share, 4),
        "baseline_share": round(decision.baseline_share, 4),
        "baseline_count": round(decision.baseline_count, 3),
        "baseline_total": round(decision.baseline_total, 3),
        "threshold": round(decision.threshold, 4),
        "odds_ratio": None if odds_ratio is None else round(odds_ratio, 3),
        "p_value": float(f"{decision.p_value:.3g}"),
        "why": decision.why,
        "rate_per_s": round(decision.count / settings.window_s, 4),
        "history_windows": decision.history_windows,
        "window_start_ms": int(start_s * 1000),
        "window_end_ms": int((start_s + settings.window_s) * 1000),
        "window_s": settings.window_s,
        "min_count": settings.min_count,
        "ratio_threshold": settings.ratio,
        "max_p_value": settings.max_p_value,
        "sample_event_ids": samples[: settings.samples],
    }
    if event_kind == "news":
        what = f"{decision.count} of {decision.total} news events labelled {record.subject!r}"
    else:
        what = f"{decision.count} of {decision.total} messages in channel {record.subject!r} negative"
    return AlertRecord(
        alert_id=alert_id,
        kind=kind,
        task=record.task,
        created_ts_ms=int(time.time() * 1000),
        severity="warning",
        subject=record.subject,
        message=(
            f"{what} in {settings.window_s:g}s window: share {decision.share:.0%} "
            f"(baseline {decision.baseline_share:.0%}, threshold {decision.threshold:.0%}, "
            f"p={decision.p_value:.2g})"
        ),
        evidence=evidence,
    )


class SurgeMonitor:
    """Faust-table state for surge detection; ``observe()`` is called once per prediction."""

    def __init__(
        self,
        app: Any,
        settings: SurgeSettings,
        partitions: int,
        topic_configs: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        w = settings.window_s
        prefix = "surge"
        schema = faust.Schema(key_serializer="json", value_serializer="json")
        # topic_configs: changelog topic configs (durability settings, driftline.kafka_admin)
        table_kw = {"partitions": partitions, "schema": schema, "extra_topic_configs": topic_configs or {}}

        def windowed(name: str) -> Any:
            return (
                app.Table(f"{prefix}-{name}", default=int, **table_kw)
                .tumbling(w, expires=w * (settings.baseline_windows + 2))
                .relative_to_stream()
            )

        self.counts = windowed("counts")  # per <task>|<subject>
        self.totals = windowed("totals")  # per share group
        # per subject: last alerted window, the current window's sample ids
        self.state = app.Table(f"{prefix}-state", default=dict, **table_kw)
        self.tables = [self.counts, self.totals, self.state]

    def observe(self, record: PredictionRecord, event_kind: str, ts_s: float) -> AlertRecord | None:
        """Count one prediction; the alert it raises when its window surges."""
        if event_kind not in KIND_BY_EVENT:
            return None
        s = self.settings
        group = share_group(record)
        self.totals[group] += 1
        if not record.subject:
            return None  # in the share group's total only (a positive chat message)
        key = f"{record.task}|{record.subject}"
        self.counts[key] += 1
        counts, totals = self.counts[key], self.totals[group]
        current = WindowCounts(int(counts.current()), int(totals.current()))
        previous = [
            WindowCounts(int(counts.delta(s.window_s * i)), int(totals.delta(s.window_s * i)))
            for i in range(1, s.baseline_windows + 1)
        ]
        start = window_start(ts_s, s.window_s)
        state = dict(self.state[key])
        if state.get("window") != start:
            state = {"window": start, "samples": [], "alerted": state.get("alerted")}
        if len(state["samples"]) < s.samples:
            state["samples"] = [*state["samples"], record.event_id]
        alert = None
        if state.get("alerted") != start:
            decision = evaluate_surge(current, previous, s)
            if decision.fire:
                state["alerted"] = start
                alert = surge_alert(record, event_kind, decision, start, s, state["samples"])
        self.state[key] = state
        return alert
