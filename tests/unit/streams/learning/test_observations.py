"""The drift watch (streams.learning.observations), no Kafka: error shifts detected, checkpoints
resumed, crafted ones refused, and late feedback on a replaced model ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from driftline.online.config import DriftConfig, ErrorRateConfig
from driftline.streams.learning.observations import DriftWatch, FeedbackObservation, ObservationBatch
from tests.support.crafted_state import old_monitor_state, pickle_payload


def _drift_config() -> DriftConfig:
    return DriftConfig(error_rate=ErrorRateConfig(grace_period=10, delta=0.002))


def _feedback_batch(correct: bool, n: int) -> ObservationBatch:
    fb = [FeedbackObservation(event_id=f"e{i}", correct=correct, model_version="1") for i in range(n)]
    return ObservationBatch(task="news_topic", feedback=fb)


CRAFTED_RECORDS = {
    "pickled_format_1": lambda payload: {"seq": 3, "state": old_monitor_state("news_topic", payload)},
    "seq_a_pickle": lambda payload: {"seq": payload, "state": {}},
    "record_a_pickle": lambda payload: payload,
    "record_a_list": lambda payload: [3, payload],
    "state_a_pickle": lambda payload: {"seq": 2, "state": payload},
    "state_missing": lambda payload: {"seq": 2},
}


def test_drift_watch_detects_error_shift_and_resumes_from_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    import driftline.streams.learning.observations as obs

    real = obs.DriftMonitor
    monkeypatch.setattr(obs, "DriftMonitor", lambda task: real(task, _drift_config()))
    store: dict[str, Any] = {}

    def batch(correct: bool, n: int) -> ObservationBatch:
        fb = [FeedbackObservation(event_id=f"e{i}", correct=correct, model_version="1") for i in range(n)]
        return ObservationBatch(task="news_topic", feedback=fb)

    first = DriftWatch(store)
    assert first.step([batch(True, 40)]) == []
    assert store["news_topic"]["seq"] == 1
    # a "restarted worker": a new watch over the same store resumes the 40 correct outcomes, so the
    # errors that follow are a change (a fresh ADWIN over errors only would see no change at all)
    second = DriftWatch(store)
    events = []
    for _ in range(8):
        events += second.step([batch(False, 5)])
    assert second.monitor("news_topic").restored
    assert [e.detector for e in events][:1] == ["error_rate"]
    assert events[0].event_count > 40
    fresh = DriftWatch({})
    assert all(not fresh.step([batch(False, 5)]) for _ in range(8)), "no change without the history"


@pytest.mark.parametrize("crafted", sorted(CRAFTED_RECORDS))
def test_drift_watch_starts_fresh_on_a_crafted_checkpoint(
    crafted: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import driftline.streams.learning.observations as obs

    real = obs.DriftMonitor
    monkeypatch.setattr(obs, "DriftMonitor", lambda task: real(task, _drift_config()))
    marker = tmp_path / "created-by-the-checkpoint"
    store: dict[str, Any] = {"news_topic": CRAFTED_RECORDS[crafted](pickle_payload(marker))}
    watch = DriftWatch(store)
    with caplog.at_level("WARNING", logger="driftline.streams.learning.observations"):
        assert watch.step([_feedback_batch(True, 5)]) == []
    assert "starting fresh" in caplog.text
    assert not marker.exists(), "the checkpoint's pickle ran"
    cached = watch.monitor("news_topic")
    assert not cached.restored and cached.monitor.feedback_seen == 5
    assert DriftWatch(store).monitor("news_topic").restored, "the record is a valid checkpoint again"


def test_drift_watch_restores_the_detectors_it_can(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import driftline.streams.learning.observations as obs

    real = obs.DriftMonitor
    monkeypatch.setattr(obs, "DriftMonitor", lambda task: real(task, _drift_config()))
    marker = tmp_path / "created-by-the-checkpoint"
    store: dict[str, Any] = {}
    DriftWatch(store).step([_feedback_batch(True, 40)])
    store["news_topic"]["state"]["detectors"]["error_rate"]["river"] = pickle_payload(marker)
    watch = DriftWatch(store)
    cached = watch.monitor("news_topic")
    assert cached.restored and set(cached.refused) == {"error_rate"}
    assert cached.monitor.feedback_seen == 40 and cached.monitor.detectors["error_rate"].n_seen == 0
    assert watch.status()["tasks"]["news_topic"]["refused_detectors"] == ["error_rate"]
    assert not marker.exists()


def test_late_feedback_on_a_replaced_model_neither_resets_nor_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    import driftline.streams.learning.observations as obs
    from driftline.streams.learning.observations import PredictionObservation

    real = obs.DriftMonitor
    monkeypatch.setattr(obs, "DriftMonitor", lambda task: real(task, _drift_config()))
    watch = DriftWatch({})
    v2 = PredictionObservation(label="sport", confidence=0.9, model_version="2", adapter_hash="b")
    ok = [
        FeedbackObservation(event_id=f"e{i}", correct=True, model_version="2", adapter_hash="b")
        for i in range(30)
    ]
    watch.step([ObservationBatch(task="news_topic", predictions=[v2], feedback=ok)])
    stale = [FeedbackObservation(event_id="old", correct=False, model_version="1", adapter_hash="a")]
    watch.step([ObservationBatch(task="news_topic", feedback=stale)])
    monitor = watch.monitor("news_topic").monitor
    assert (monitor.model_version, monitor.feedback_seen) == ("2", 30)
    assert monitor.detectors["error_rate"].n_seen == 30, "no reset, stale outcome not counted"
    assert watch.stats["stale_feedback"] == 1
