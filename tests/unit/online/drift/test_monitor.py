"""DriftMonitor: predictions and feedback in, DriftEvents out, state survives a restart."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import pytest

from driftline.models.inference.base import Prediction
from driftline.online.config import DriftConfig, online_config
from driftline.online.drift import DriftMonitor, StateMismatchError
from driftline.schema.records import DriftEvent
from tests.support.crafted_state import old_detector_state, old_monitor_state, pickle_payload

LABELS = ["business", "entertainment", "politics", "sport", "tech"]


def _prediction(rng: random.Random, shifted: bool, version: str = "1") -> dict:
    if shifted and rng.random() < 0.5:
        label, conf = rng.choice(["business", "tech"]), rng.uniform(0.35, 0.7)
    else:
        label, conf = rng.choice(["business", "politics", "sport", "tech"]), rng.uniform(0.85, 0.99)
    return {"label": label, "confidence": conf, "model_version": version, "adapter_hash": f"h{version}"}


def test_monitor_raises_events_after_shift_only() -> None:
    rng = random.Random(0)
    monitor = DriftMonitor("news_topic")
    before = [e for _ in range(3000) for e in monitor.update_prediction(_prediction(rng, False))]
    before += [e for _ in range(600) for e in monitor.update_feedback(rng.random() > 0.03)]
    assert before == []
    after = []
    for i in range(300):
        after += monitor.update_prediction(_prediction(rng, True))
        if i % 5 == 0:
            after += monitor.update_feedback(rng.random() > 0.45)
    kinds = {event.detector for event in after}
    assert {"confidence", "label_mix"} <= kinds
    event = after[0]
    assert event.task == "news_topic" and event.model_version == "1" and event.adapter_hash == "h1"
    assert event.event_count > 3000


def test_drift_event_alert_round_trip() -> None:
    event = DriftEvent(
        detector="error_rate",
        task="news_topic",
        statistic=0.31,
        window=120,
        model_version="2",
        adapter_hash="abc",
        event_count=4000,
        signal="error_rate",
        details={"x": 1},
    )
    alert = event.to_alert()
    assert alert["kind"] == "drift" and alert["task"] == "news_topic" and "0.3100" in alert["message"]
    from driftline.schema.records import AlertRecord  # the pipeline's alerts-topic schema must accept it

    assert AlertRecord(**alert).evidence["statistic"] == 0.31
    assert json.loads(json.dumps(alert)) == alert  # topic payload is plain JSON
    assert DriftEvent.from_alert(alert) == event
    row = dict(zip(DriftEvent.COLUMNS, event.to_row(), strict=True))
    assert row["window_size"] == 120 and json.loads(row["details"]) == {"x": 1}
    with pytest.raises(ValueError):
        DriftEvent.from_alert({"kind": "promotion"})


def test_monitor_state_survives_restart() -> None:
    rng = random.Random(1)
    stream = [_prediction(rng, i > 1500) for i in range(2200)]
    a = DriftMonitor("news_topic")
    for p in stream[:1400]:
        a.update_prediction(p)
    b = DriftMonitor("news_topic")
    b.load_state(json.loads(json.dumps(a.state_dict())))
    events_a = [(e.detector, e.event_count) for p in stream[1400:] for e in a.update_prediction(p)]
    events_b = [(e.detector, e.event_count) for p in stream[1400:] for e in b.update_prediction(p)]
    assert events_a == events_b and events_a
    with pytest.raises(StateMismatchError):
        DriftMonitor("chat_sentiment").load_state(a.state_dict())


def test_new_model_version_resets_baselines() -> None:
    rng = random.Random(2)
    monitor = DriftMonitor("news_topic")
    for _ in range(1000):
        monitor.update_prediction(_prediction(rng, False, version="1"))
    assert monitor.detectors["confidence"].n_seen == 1000
    monitor.update_prediction(
        Prediction(
            label="sport",
            probabilities={"sport": 0.9},
            explanation=[],
            model_name="news_topic",
            model_version="2",
            adapter_hash="h2",
        )
    )
    assert monitor.model_version == "2"
    assert monitor.detectors["label_mix"].window == 0 and monitor.detectors["confidence"].window <= 1


def test_config_overrides_and_validation(tmp_path) -> None:
    cfg = online_config("chat_sentiment")
    assert cfg.drift.confidence.threshold == 10.0 and cfg.drift.confidence.delta == 0.01
    bad = tmp_path / "online.yaml"
    bad.write_text("defaults:\n  drift:\n    confidence: {treshold: 3}\n")
    with pytest.raises(ValueError, match="treshold"):
        online_config("news_topic", bad)
    off = tmp_path / "off.yaml"
    off.write_text("defaults:\n  drift:\n    label_mix: {enabled: false}\n")
    assert set(DriftMonitor("news_topic", online_config("news_topic", off).drift).detectors) == {
        "error_rate",
        "confidence",
        "unlearned_class",
    }


def _fed_monitor() -> DriftMonitor:
    rng = random.Random(3)
    monitor = DriftMonitor("news_topic")
    for _ in range(400):
        monitor.update_prediction(_prediction(rng, False))
    for _ in range(100):
        monitor.update_feedback(rng.random() > 0.05, "1", "h1")
    return monitor


def test_monitor_refuses_a_pickled_checkpoint_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "created-by-the-checkpoint"
    monitor = _fed_monitor()
    before = monitor.state_dict()
    with pytest.raises(StateMismatchError, match="format 1"):
        monitor.load_state(old_monitor_state("news_topic", pickle_payload(marker)))
    assert not marker.exists()
    assert monitor.state_dict() == before


CRAFTED_MONITOR: dict[str, Any] = {
    "not_an_object": lambda s: [s],
    "task_as_list": lambda s: {**s, "task": ["news_topic"]},
    "count_as_string": lambda s: {**s, "predictions_seen": "400"},
    "count_nan": lambda s: {**s, "feedback_seen": float("nan")},
    "version_huge": lambda s: {**s, "model_version": "1" * 100_000},
    "detectors_as_list": lambda s: {**s, "detectors": list(s["detectors"].values())},
    "detectors_huge": lambda s: {**s, "detectors": {f"d{i}": {} for i in range(10_000)}},
    "unknown_field": lambda s: {**s, "__class__": "DriftMonitor"},
}


@pytest.mark.parametrize("crafted", sorted(CRAFTED_MONITOR))
def test_monitor_refuses_an_invalid_checkpoint_unchanged(crafted: str) -> None:
    monitor = _fed_monitor()
    before = monitor.state_dict()
    with pytest.raises(StateMismatchError):
        monitor.load_state(CRAFTED_MONITOR[crafted](json.loads(json.dumps(before))))
    assert monitor.state_dict() == before


def test_monitor_starts_refused_detectors_fresh_and_resumes_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "created-by-the-checkpoint"
    saved = _fed_monitor()
    state = json.loads(json.dumps(saved.state_dict()))
    state["detectors"]["error_rate"] = old_detector_state("error_rate", pickle_payload(marker))
    state["detectors"]["label_mix"]["psi"] = float("nan")
    monitor = DriftMonitor("news_topic")
    with caplog.at_level(logging.WARNING, logger="driftline.online.drift.monitor"):
        refused = monitor.load_state(state)
    assert set(refused) == {"error_rate", "label_mix"} and "format 1" in refused["error_rate"]
    assert {r.detector for r in caplog.records} == {"error_rate", "label_mix"}
    assert not marker.exists()
    assert monitor.detectors["error_rate"].n_seen == monitor.detectors["label_mix"].n_seen == 0
    assert monitor.detectors["confidence"].state_dict() == saved.detectors["confidence"].state_dict()
    assert (monitor.predictions_seen, monitor.feedback_seen, monitor.model_version) == (400, 100, "1")


def test_a_class_the_version_never_gets_right_is_a_drift_after_a_few_labels() -> None:
    """Five labels of one class, all predicted wrong: an alarm naming it, long before the error rate moves."""
    monitor = DriftMonitor("news_topic", DriftConfig())
    rng = random.Random(7)
    events = []
    for _ in range(300):  # a version that knows its classes (90 % right)
        events += monitor.update_feedback(rng.random() < 0.9, "1", "h1", label=rng.choice(["sport", "tech"]))
    assert events == []
    fired = []
    for i in range(40):  # now one label in four is a class it cannot name
        label, correct = ("entertainment", False) if i % 4 == 0 else ("sport", rng.random() < 0.9)
        fired += [(i, e) for e in monitor.update_feedback(correct, "1", "h1", label=label)]
    [(at, event)] = fired  # once: the class does not raise a burst
    assert at == 16 and event.detector == "unlearned_class" and event.signal == "unlearned_class"
    assert event.details == {"label": "entertainment", "wrong": 5, "right": 0} and event.statistic == 5
    # a class it got right once is known: misses later are the error rate's business
    monitor.update_feedback(True, "1", "h1", label="business")
    assert not any(monitor.update_feedback(False, "1", "h1", label="business") for _ in range(10))
    # a new version has to show again what it knows
    version_2 = {"label": "sport", "confidence": 0.9, "model_version": "2", "adapter_hash": "h2"}
    monitor.update_prediction(version_2)
    again = [e for _ in range(5) for e in monitor.update_feedback(False, "2", "h2", label="entertainment")]
    assert [e.detector for e in again] == ["unlearned_class"]
