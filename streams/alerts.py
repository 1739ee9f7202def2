"""Surge alerts: a tumbling window's count for a subject against an EWMA baseline of earlier windows.

Two alert kinds share one rule:

- ``topic_volume_surge``: news events per predicted label (subject = label),
- ``negative_sentiment_surge``: negative chat messages per channel (subject = channel).

Counts live in a Faust *windowed table* (tumbling, event time: predictions are produced with the
event's timestamp, and the table is ``relative_to_stream``). Predictions are keyed by
``<task>|<subject>``, so the table is co-partitioned with the predictions topic and, with several
workers, every subject is counted by exactly one of them - no repartition topic needed.

The baseline is an EWMA over the previous ``baseline_windows`` windows (oldest first, so the most
recent weighs most), using only windows after the task was first seen: a freshly started pipeline
has no history, and "0 before, 20 now" at start-up is not a surge. An alert needs at least
``min_history`` windows of history, ``count >= min_count`` and ``count >= ratio * max(baseline,
baseline_floor)``; it fires once per (subject, window) and its id is derived from those, so a
redelivered event re-creating it collapses to one row in ClickHouse.
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


def ewma(values_oldest_first: Sequence[float], alpha: float) -> float:
    """Exponentially weighted mean, oldest value first."""
    if not values_oldest_first:
        return 0.0
    level = float(values_oldest_first[0])
    for value in values_oldest_first[1:]:
        level = alpha * float(value) + (1.0 - alpha) * level
    return level


@dataclass(frozen=True)
class SurgeDecision:
    """Whether a window's count is a surge, and the numbers behind it."""

    fire: bool
    count: int
    baseline: float
    threshold: float
    history_windows: int
    why: str


def evaluate_surge(
    count: int, previous_newest_first: Sequence[int], settings: SurgeSettings
) -> SurgeDecision:
    """Decide whether ``count`` in the current window is a surge over ``previous`` windows' counts.

    ``previous_newest_first`` holds only windows inside the task's history (see module docstring).
    """
    history = list(previous_newest_first)[: settings.baseline_windows]
    baseline = ewma(list(reversed(history)), settings.ewma_alpha)
    threshold = max(settings.min_count, settings.ratio * max(baseline, settings.baseline_floor))
    if len(history) < MIN_HISTORY:
        return SurgeDecision(False, count, baseline, threshold, len(history), "not enough history")
    if count < settings.min_count:
        return SurgeDecision(False, count, baseline, threshold, len(history), "below min_count")
    if count < settings.ratio * max(baseline, settings.baseline_floor):
        return SurgeDecision(False, count, baseline, threshold, len(history), "below ratio x baseline")
    return SurgeDecision(True, count, baseline, threshold, len(history), "surge")


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
    what = "events labelled" if event_kind == "news" else "negative messages in channel"
    evidence: dict[str, Any] = {
        "count": decision.count,
        "baseline": round(decision.baseline, 3),
        "rate_per_s": round(decision.count / settings.window_s, 4),
        "ratio": round(decision.count / max(decision.baseline, settings.baseline_floor), 3),
        "threshold": round(decision.threshold, 3),
        "history_windows": decision.history_windows,
        "window_start_ms": int(start_s * 1000),
        "window_end_ms": int((start_s + settings.window_s) * 1000),
        "window_s": settings.window_s,
        "min_count": settings.min_count,
        "ratio_threshold": settings.ratio,
        "sample_event_ids": samples[: settings.samples],
    }
    return AlertRecord(
        alert_id=alert_id,
        kind=kind,
        task=record.task,
        created_ts_ms=int(time.time() * 1000),
        severity="warning",
        subject=record.subject,
        message=(
            f"{decision.count} {what} {record.subject!r} in {settings.window_s:g}s window "
            f"(baseline {decision.baseline:.1f}, threshold {decision.threshold:.1f})"
        ),
        evidence=evidence,
    )


class SurgeMonitor:
    """Faust-table state for surge detection; ``observe()`` is called once per prediction."""

    def __init__(
        self, app: Any, settings: SurgeSettings, partitions: int, topic_config: dict[str, str] | None = None
    ) -> None:
        self.settings = settings
        w = settings.window_s
        prefix = "surge"
        schema = faust.Schema(key_serializer="json", value_serializer="json")
        # topic_config: extra configs of the changelog topics (min.insync.replicas)
        extra = dict(topic_config or {})
        table_kw = {"partitions": partitions, "schema": schema, "extra_topic_configs": extra}
        self.counts = (
            app.Table(f"{prefix}-counts", default=int, **table_kw)
            .tumbling(w, expires=w * (settings.baseline_windows + 2))
            .relative_to_stream()
        )
        # per subject: first window seen for the task, last alerted window, recent sample ids
        self.state = app.Table(f"{prefix}-state", default=dict, **table_kw)

    def observe(self, record: PredictionRecord, event_kind: str, ts_s: float) -> AlertRecord | None:
        """Count one prediction; the alert it raises when its window surges."""
        if not record.subject or event_kind not in KIND_BY_EVENT:
            return None
        s = self.settings
        key = f"{record.task}|{record.subject}"
        start = window_start(ts_s, s.window_s)
        task_key = f"{record.task}|"
        task_state = dict(self.state[task_key])
        first = task_state.get("first_window")
        if first is None or start < first:
            task_state["first_window"] = first = start
            self.state[task_key] = task_state
        self.counts[key] += 1
        window = self.counts[key]
        count = int(window.current())
        n_prev = min(s.baseline_windows, round((start - first) / s.window_s))
        previous = [int(window.delta(s.window_s * i)) for i in range(1, n_prev + 1)]
        state = dict(self.state[key])
        if state.get("window") != start:
            state = {"window": start, "samples": [], "alerted": state.get("alerted")}
        if len(state["samples"]) < s.samples:
            state["samples"] = [*state["samples"], record.event_id]
        decision = evaluate_surge(count, previous, s)
        alert = None
        if decision.fire and state.get("alerted") != start:
            state["alerted"] = start
            alert = surge_alert(record, event_kind, decision, start, s, state["samples"])
        self.state[key] = state
        return alert
