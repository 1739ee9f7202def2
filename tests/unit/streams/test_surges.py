"""The surge rule (share and volume against the baseline) and ``SurgeMonitor`` over fake Faust tables.

``FakeApp`` stands in for Faust: its windowed tables are tumbling windows over the event time the test
sets (what ``relative_to_stream`` reads from the current event), so the monitor runs unchanged.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import pytest

from driftline.schema.records import AlertRecord, PredictionRecord
from driftline.settings import SurgeSettings
from driftline.streams.surges import (
    SurgeMonitor,
    WindowCounts,
    evaluate_surge,
    ewma,
    prediction_key,
    share_needed,
    subject_of,
    window_start,
)

W = 60.0
S = SurgeSettings(window_s=W, baseline_windows=6, ewma_alpha=0.5, min_count=10, ratio=3.0, max_p_value=0.001)


# --- fake Faust tables ---------------------------------------------------------------------------


class FakeWindowSet:
    def __init__(self, table: FakeWindowedTable, key: str) -> None:
        self.table, self.key = table, key

    def _at(self, ts: float) -> tuple[str, float]:
        return self.key, window_start(ts, self.table.window_s)

    def __iadd__(self, n: int) -> FakeWindowSet:
        self.table.data[self._at(self.table.app.now)] += n
        return self

    def current(self) -> int:
        return self.table.data.get(self._at(self.table.app.now), 0)

    def delta(self, d: float) -> int:
        return self.table.data.get(self._at(self.table.app.now - d), 0)


class FakeWindowedTable:
    def __init__(self, app: FakeApp) -> None:
        self.app, self.window_s = app, 0.0
        self.data: defaultdict[tuple[str, float], int] = defaultdict(int)

    def tumbling(self, size: float, expires: float) -> FakeWindowedTable:
        self.window_s = size
        return self

    def relative_to_stream(self) -> FakeWindowedTable:
        return self

    def __getitem__(self, key: str) -> FakeWindowSet:
        return FakeWindowSet(self, key)

    def __setitem__(self, key: str, value: FakeWindowSet) -> None:
        assert isinstance(value, FakeWindowSet)  # ``table[key] += 1`` stores the window set back


class FakeApp:
    def __init__(self) -> None:
        self.now = 0.0  # the current event's time, as Faust's relative_to_stream sees it
        self.tables: dict[str, Any] = {}

    def Table(self, name: str, default: type, **kw: Any) -> Any:  # Faust's name
        table = FakeWindowedTable(self) if default is int else defaultdict(default)
        self.tables[name] = table
        return table


# --- traffic -------------------------------------------------------------------------------------

Event = tuple[float, str, str, str]  # (event time, kind, label, channel)
NEWS_MIX = {"sport": 8, "tech": 6, "business": 4, "politics": 2}  # per 20 news events
NEG_PER_20 = 5  # negative chat messages per 20


def _record(i: int, ts: float, kind: str, label: str, channel: str) -> PredictionRecord:
    task = "news_topic" if kind == "news" else "chat_sentiment"
    names = list(NEWS_MIX) if kind == "news" else ["negative", "positive"]
    return PredictionRecord(
        event_id=f"e{i}", task=task, event_kind=kind, subject=subject_of(kind, label, channel, S),
        topic="t", partition=0, offset=i, event_ts_ms=int(ts * 1000), processed_ts_ms=int(ts * 1000),
        text="x", source="s", channel=channel, language="", label=label, confidence=0.9,
        label_names=names, probabilities=[1.0 / len(names)] * len(names), explanation=[], model_name="m",
        model_version="1", adapter_hash="", truncated=False, latency_ms=1.0,
    )  # fmt: skip


def window_traffic(
    w: int, scale: int, rng: random.Random, extra: Iterable[tuple[str, str, str]] = ()
) -> list[Event]:
    """Window ``w``'s steady traffic at ``scale`` x 20 events per stream, shuffled, spread over the window."""
    items = [("news", label, "bbc") for label, n in NEWS_MIX.items() for _ in range(n * scale)]
    items += [("chat", "negative", "support")] * (NEG_PER_20 * scale)
    items += [("chat", "positive", "support")] * ((20 - NEG_PER_20) * scale)
    items += list(extra)
    rng.shuffle(items)
    step = W / (len(items) + 1)
    return [(w * W + (i + 1) * step, kind, label, channel) for i, (kind, label, channel) in enumerate(items)]


def run_monitor(events: list[Event], settings: SurgeSettings = S) -> list[AlertRecord]:
    """Every alert a fresh monitor raises over ``events`` (in order)."""
    app = FakeApp()
    monitor = SurgeMonitor(app, settings, partitions=4)
    alerts = []
    for i, (ts, kind, label, channel) in enumerate(events):
        app.now = ts
        alert = monitor.observe(_record(i, ts, kind, label, channel), kind, ts)
        if alert is not None:
            alerts.append(alert)
    return alerts


def steady_then(
    pause: int, resume_scale: int, resume_windows: int = 6, steady_windows: int = 6
) -> list[Event]:
    rng = random.Random(7)
    events = [e for w in range(steady_windows) for e in window_traffic(w, 1, rng)]
    first = steady_windows + pause
    return events + [
        e for w in range(first, first + resume_windows) for e in window_traffic(w, resume_scale, rng)
    ]


# --- the monitor over a stream ---------------------------------------------------------------------


@pytest.mark.parametrize("pause", [0, 2, 4, 10])
def test_pause_and_resume_of_steady_traffic_at_3x_fires_nothing(pause: int) -> None:
    # A count-only rule fires here: after the pause the windows' counts triple (and the pause's empty
    # windows pulled its baseline towards zero), yet every label's and channel's share is unchanged.
    assert run_monitor(steady_then(pause=pause, resume_scale=3)) == []


def test_a_planted_share_surge_fires_once_with_its_evidence() -> None:
    rng = random.Random(3)
    events = [e for w in range(6) for e in window_traffic(w, 1, rng)]
    planted = [("chat", "negative", "support")] * 30 + [("news", "tech", "bbc")] * 40
    events += window_traffic(6, 1, rng, extra=planted)  # the surge window: steady traffic + planted
    events += [e for w in range(7, 9) for e in window_traffic(w, 1, rng)]

    alerts = run_monitor(events)
    assert sorted((a.kind, a.task, a.subject) for a in alerts) == [
        ("negative_sentiment_surge", "chat_sentiment", "support"),
        ("topic_volume_surge", "news_topic", "tech"),
    ]
    for alert in alerts:
        ev = alert.evidence
        assert ev["window_start_ms"] == int(6 * W * 1000) and ev["history_windows"] == 6
        assert ev["count"] >= S.min_count and ev["total"] >= ev["count"]
        assert ev["share"] >= ev["threshold"] > ev["baseline_share"] and ev["p_value"] <= S.max_p_value
        assert ev["odds_ratio"] >= S.ratio and ev["why"].startswith("share ")
        kind_key = f"{alert.kind}|{alert.task}|{alert.subject}|{int(6 * W)}"
        assert alert.alert_id == hashlib.sha1(kind_key.encode()).hexdigest()[:20]
        assert len(ev["sample_event_ids"]) == S.samples
    by_subject = {a.subject: a.evidence for a in alerts}
    assert by_subject["support"]["baseline_share"] == pytest.approx(NEG_PER_20 / 20)
    assert by_subject["tech"]["baseline_share"] == pytest.approx(NEWS_MIX["tech"] / 20)
    # a replay of the same stream (redelivery after a restart) raises the same ids: one row each
    assert [a.alert_id for a in run_monitor(events)] == [a.alert_id for a in alerts]


def test_a_surge_right_after_a_pause_still_fires() -> None:
    rng = random.Random(5)
    events = [e for w in range(6) for e in window_traffic(w, 1, rng)]
    events += window_traffic(9, 3, rng, extra=[("chat", "negative", "support")] * 60)
    alerts = run_monitor(events)
    assert [(a.subject, a.evidence["history_windows"]) for a in alerts] == [("support", 3)]


def test_share_surges_below_min_count_never_fire() -> None:
    rng = random.Random(11)
    events = [e for w in range(6) for e in window_traffic(w, 1, rng)]
    # "quiet": 2 positive messages a window, then 9 negatives of 10 - the share leaps, the count is small
    for w in range(6):
        events += [(w * W + 30 + k, "chat", "positive", "quiet") for k in range(2)]
    events += window_traffic(
        6, 1, rng, extra=[("chat", "negative", "quiet")] * 9 + [("chat", "positive", "quiet")]
    )
    events.sort(key=lambda e: e[0])
    assert run_monitor(events) == []
    # the same leap with min_count lowered does fire: the count was the only thing missing
    assert [a.subject for a in run_monitor(events, S.model_copy(update={"min_count": 5}))] == ["quiet"]


def test_a_fresh_pipeline_needs_history() -> None:
    rng = random.Random(13)
    surge = [("chat", "negative", "support")] * 40
    assert run_monitor(window_traffic(0, 1, rng) + window_traffic(1, 1, rng, extra=surge)) == []


# --- the rule ------------------------------------------------------------------------------------


def _history(count: int, total: int, n: int = 4) -> list[WindowCounts]:
    return [WindowCounts(count, total)] * n


def test_ewma_weighs_recent_windows_most() -> None:
    assert ewma([0, 0, 8], 0.5) == 4.0
    assert ewma([8, 0, 0], 0.5) == 2.0


def test_share_needed_is_the_odds_ratio_threshold() -> None:
    assert share_needed(0.25, 3.0) == pytest.approx(0.5)  # odds 1/3 -> 1
    assert share_needed(0.5, 3.0) == pytest.approx(0.75)  # reachable for common subjects too
    assert share_needed(0.0, 3.0) == 0.0 and share_needed(1.0, 3.0) == 1.0


def test_surge_needs_share_lift_significance_count_and_history() -> None:
    assert evaluate_surge(WindowCounts(60, 100), _history(20, 80), S).fire  # 0.6 vs 0.25
    # volume alone: 3x the count at the same share
    assert "share" in evaluate_surge(WindowCounts(60, 240), _history(20, 80), S).why
    assert not evaluate_surge(WindowCounts(60, 240), _history(20, 80), S).fire
    # a lift below ratio x the odds: 0.45 < 0.5
    assert not evaluate_surge(WindowCounts(45, 100), _history(20, 80), S).fire
    # below min_count
    decision = evaluate_surge(WindowCounts(9, 10), _history(1, 20), S)
    assert not decision.fire and "min_count" in decision.why
    # a big lift on a thin baseline is not significant: 10 of 16 against 1 of 4 per window
    decision = evaluate_surge(WindowCounts(10, 16), _history(1, 4, n=2), S)
    assert not decision.fire and "not significant" in decision.why and decision.share > decision.threshold
    # one non-empty window is no baseline
    assert not evaluate_surge(WindowCounts(60, 100), _history(20, 80, n=1), S).fire
    # a subject absent from a busy baseline that takes a large share fires
    assert evaluate_surge(WindowCounts(30, 100), _history(0, 100), S).fire


def test_empty_windows_are_skipped_in_the_baseline() -> None:
    history = [WindowCounts(0, 0)] * 3 + _history(20, 80, n=3)  # newest first: a pause, then traffic
    decision = evaluate_surge(WindowCounts(60, 240), history, S)
    assert decision.history_windows == 3 and decision.baseline_share == pytest.approx(0.25)
    assert not decision.fire


def test_subject_of() -> None:
    assert subject_of("news", "sport", "bbc", S) == "sport"
    assert subject_of("chat", "negative", "ch1", S) == "ch1"
    assert subject_of("chat", "positive", "ch1", S) == ""


def test_prediction_key_puts_a_share_and_its_total_on_one_partition() -> None:
    neg, pos = _record(0, 1.0, "chat", "negative", "c1"), _record(1, 1.0, "chat", "positive", "c1")
    assert prediction_key(neg) == prediction_key(pos) == "chat_sentiment|c1"
    assert prediction_key(_record(2, 1.0, "chat", "negative", "c2")) != prediction_key(neg)
    news = {prediction_key(_record(i, 1.0, "news", label, "bbc")) for i, label in enumerate(NEWS_MIX)}
    assert news == {"news_topic|"}
