"""The demo report (apps/demo/report.py) from stored rows: headline arithmetic, rejected updates and
shadows, rolling accuracy, and the files written.
"""

from __future__ import annotations

from pathlib import Path

from driftline.apps.demo.options import NEW_CLASS, NEWS_TASK
from driftline.apps.demo.report import analyse, decision_of, render_markdown, rolling, write_report
from driftline.apps.demo.store import DriftRow, LabelRow, VersionRow
from driftline.apps.demo.stream import DemoEvent


def _event(i: int, phase: str, label: str, feedback: bool = True) -> DemoEvent:
    return DemoEvent(f"demo-x-news-{i}", NEWS_TASK, "news", label, phase, f"t{i}", feedback, i, 1000 + i)


def _label(event: DemoEvent, predicted: str, version: str, ts: int) -> LabelRow:
    return LabelRow(
        event.event_id, NEWS_TASK, predicted, 0.9, version, "h", ts - 50, ts, 12.0 + event.index % 5
    )


def _scenario():
    """10 pre events (9 right), 10 shifted on v1 (4 entertainment, all wrong; 6 others right),
    10 shifted on v2 (4 entertainment right, 5 of 6 others right); drift after 3 shifted events."""
    events, labels = [], []
    for i in range(10):
        e = _event(i, "pre", "sport")
        events.append(e)
        labels.append(_label(e, "sport" if i else "tech", "1", 10_000 + i * 100))
    for i in range(10, 20):
        truth = NEW_CLASS if i % 5 < 2 else "politics"
        e = _event(i, "post", truth)
        events.append(e)
        labels.append(_label(e, "business" if truth == NEW_CLASS else "politics", "1", 10_000 + i * 100))
    for i in range(20, 30):
        truth = NEW_CLASS if i % 5 < 2 else "politics"
        e = _event(i, "after", truth)
        events.append(e)
        predicted = truth if i != 22 else "tech"
        labels.append(_label(e, predicted, "2", 10_000 + i * 100))
    drift = [
        DriftRow(
            NEWS_TASK, "error_rate", "error_rate", 10_500, 0.4, "1", 50
        ),  # before the shift: false alarm
        DriftRow(NEWS_TASK, "label_mix", "label_mix", 10_000 + 12 * 100 + 1, 0.3, "1", 80),
    ]
    versions = [
        VersionRow(NEWS_TASK, "1", "serving", "initial", "{}", 9_000, 9_000),
        VersionRow(NEWS_TASK, "2", "serving", "promoted: better", '{"fit": "head"}', 11_900, 11_950),
    ]
    return events, labels, drift, versions


def test_headline_numbers_are_computed_from_rows() -> None:
    events, labels, drift, versions = _scenario()
    h, news = analyse(events, labels, drift, versions, initial_version="1", feedback_joined=7)
    assert len(news) == 30
    assert h.pre_shift_accuracy == 0.9
    assert h.drop_accuracy == 0.6 and h.drop_events == 10
    assert h.detection_delay_events == 3 and h.first_detector == "label_mix"
    assert h.false_alarms_before_shift == 1
    assert h.decision == "promoted" and h.promoted_version == "2" and h.decision_fit == "head"
    assert h.recovered_accuracy == 0.9 and h.recovered_events == 10
    assert h.promotion_delay_events == 10
    assert abs(h.recovery_ratio - 1.0) < 1e-9
    assert h.new_class_accuracy_before == 0.0 and h.new_class_accuracy_after == 1.0
    assert h.latency_ms[NEWS_TASK]["p50"] == 14.0
    assert h.end_to_end_ms[NEWS_TASK]["p99"] == 50.0
    assert h.feedback_joined_by_pipeline == 7
    assert h.labels_to_promotion == 20  # every event before index 20 (v2's first) was labelled
    assert h.labels_shift_to_promotion == 10  # of them, the shifted events 10..19
    events[3].feedback = events[15].feedback = events[25].feedback = False
    assert analyse(events, labels, drift, versions, initial_version="1")[0].labels_to_promotion == 18
    # what the promotion took: labels sent from the shift until the update that promoted started
    for e in events:
        e.feedback_ts_ms = 10_050 + e.index * 100 if e.feedback else 0
    h, _ = analyse(events, labels, drift, versions, initial_version="1", update_starts_ms=[10_300, 11_460])
    assert h.labels_to_decision == 5  # shifted events 10-14, labelled by 11,450 ms
    assert analyse(events, labels, drift, versions, initial_version="1")[0].labels_to_decision is None


def test_rejected_update_has_no_recovery() -> None:
    events, labels, drift, _ = _scenario()
    versions = [VersionRow(NEWS_TASK, "", "rejected", "candidate not better", "{}", 11_900, 11_950)]
    labels = [lab if lab.model_version == "1" else LabelRow(*{**lab.__dict__, "model_version": "1"}.values())
              for lab in labels]  # fmt: skip
    h, _ = analyse(events, labels, drift, versions, initial_version="1")
    assert h.decision == "rejected" and h.promoted_version == "" and h.decision_fit == ""
    assert h.recovered_accuracy is None and h.recovery_ratio is None
    assert h.drop_events == 20


def test_a_rejected_shadow_is_a_rejection_though_it_has_a_version() -> None:
    events, labels, drift, _ = _scenario()
    versions = [VersionRow(NEWS_TASK, "2", "rejected", "shadow: agreement 0.31", "{}", 11_900, 11_950)]
    assert decision_of(versions, "1").status == "rejected"
    labels = [lab if lab.model_version == "1" else LabelRow(*{**lab.__dict__, "model_version": "1"}.values())
              for lab in labels]  # fmt: skip
    h, _ = analyse(events, labels, drift, versions, initial_version="1")
    assert h.decision == "rejected" and h.promoted_version == ""
    shadowing = [VersionRow(NEWS_TASK, "2", "shadow", "passed the gate", "{}", 11_900, 11_950)]
    assert decision_of(shadowing, "1") is None  # still deciding


def test_rolling_accuracy() -> None:
    values = rolling([True, False, True, True], 2)
    assert list(values) == [1.0, 0.5, 0.5, 1.0]
    assert rolling([], 5).size == 0


def test_report_files(tmp_path: Path) -> None:
    events, labels, drift, versions = _scenario()
    h = write_report(
        tmp_path, events, labels, drift, versions, initial_version="1", feedback_joined=0, window=5,
        context={"run_id": "x", "missing": ["something absent"], "details": {"k": "v"}},
    )  # fmt: skip
    for name in ("accuracy.png", "throughput.png", "latency.png", "headline.json", "report.md"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    text = (tmp_path / "report.md").read_text()
    assert "90.0%" in text and "3 events (label_mix)" in text and "something absent" in text
    assert render_markdown(h, {}).startswith("# driftline demo report")
