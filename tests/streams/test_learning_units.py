"""Unit tests of the learning loop's decisions (no Kafka): feedback join/grace rules, drift watch.

The lookup is an in-memory fake here; the stack test (test_learning_stack.py) runs the same stage
against ClickHouse ``labels`` inside real workers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from driftline.online.config import DriftConfig, ErrorRateConfig
from driftline.schema.records import FeedbackRecord, PredictionRecord
from driftline.settings import LearningConfig
from driftline.streams.deadletter import dead_letter
from driftline.streams.learning.feedback import FeedbackStage
from driftline.streams.learning.lookup import Key
from driftline.streams.learning.observations import DriftWatch, FeedbackObservation, ObservationBatch
from driftline.streams.stages import RawMessage
from tests.online.crafted_state import old_monitor_state, pickle_payload


class FakeLookup:
    def __init__(self) -> None:
        self.rows: dict[Key, dict[str, Any]] = {}
        self.calls: list[list[Key]] = []
        self.fail = False

    async def find(self, keys):
        keys = list(keys)
        self.calls.append(keys)
        if self.fail:
            raise ConnectionError("clickhouse down")
        return {k: self.rows[k] for k in keys if k in self.rows}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _reject(msg, rejection):
    return dead_letter(topic=msg.topic, partition=msg.partition, offset=msg.offset, payload=msg.value,
                       rejection=rejection, max_payload_bytes=1024)  # fmt: skip


def _stage(lookup: FakeLookup, clock: Clock, grace: float = 10.0) -> FeedbackStage:
    return FeedbackStage(LearningConfig(grace_s=grace), reject=_reject, lookup=lookup,
                         max_event_bytes=1 << 20, max_text_chars=10_000, clock=clock)  # fmt: skip


def _prediction(event_id: str, label: str = "sport") -> PredictionRecord:
    return PredictionRecord(
        event_id=event_id, task="news_topic", event_kind="news", subject=label, topic="t", partition=0,
        offset=0, event_ts_ms=1, processed_ts_ms=2, text="x", source="s", channel="s", language="en",
        label=label, confidence=0.9, label_names=[label], probabilities=[1.0], explanation=[],
        model_name="m", model_version="3", adapter_hash="abc", truncated=False, latency_ms=1.0,
    )  # fmt: skip


_offsets = iter(range(10**6))


def _msg(value: bytes) -> tuple[RawMessage, Any]:
    released: list[int] = []
    msg = RawMessage("fb", 0, next(_offsets), value)
    return msg, lambda: released.append(1)


def _fb(event_id: str, label: str = "sport") -> bytes:
    return json.dumps({"event_id": event_id, "task": "news_topic", "label": label, "source": "t",
                       "timestamp": 1_700_000_000}).encode()  # fmt: skip


async def test_memory_clickhouse_and_bad_feedback() -> None:
    lookup, clock = FakeLookup(), Clock()
    stage = _stage(lookup, clock)
    stage.remember([_prediction("mem-1", "sport")])
    lookup.rows[("news_topic", "ch-1")] = {"event_id": "ch-1", "task": "news_topic", "label": "business",
                                           "model_version": "2", "adapter_hash": "h", "confidence": 0.5,
                                           "processed_ts_ms": 5}  # fmt: skip
    out = await stage.intake(
        [_msg(_fb("mem-1", "sport")), _msg(_fb("ch-1", "tech")), _msg(b"{not json"),
         _msg(_fb("x", "cooking"))]
    )  # fmt: skip
    joined = {j.feedback.event_id: j for j, *_ in out.joined}
    assert set(joined) == {"mem-1", "ch-1"}
    assert joined["mem-1"].correct and not joined["ch-1"].correct
    assert joined["ch-1"].prediction.model_version == "2"
    assert sorted(d.code for d, _ in out.dead_letters) == ["not_json", "unknown_label"]
    assert lookup.calls == [[("news_topic", "ch-1")]], "memory hits are never looked up"
    row = dict(zip(FeedbackRecord.COLUMNS, joined["ch-1"].record().to_row(), strict=True))
    assert row["predicted_label"] == "business" and row["correct"] == 0 and row["feedback_time"].tzinfo
    assert stage.pending == 0


async def test_unknown_id_waits_for_grace_and_late_predictions_still_join() -> None:
    lookup, clock = FakeLookup(), Clock()
    stage = _stage(lookup, clock, grace=10.0)
    out = await stage.intake([_msg(_fb("late")), _msg(_fb("never"))])
    assert not out.joined and not out.dead_letters and stage.pending == 2
    clock.now += 5
    lookup.rows[("news_topic", "late")] = {"event_id": "late", "task": "news_topic", "label": "sport",
                                           "processed_ts_ms": 1}  # fmt: skip
    out = await stage.retry()
    assert [j.feedback.event_id for j, *_ in out.joined] == ["late"] and not out.dead_letters
    # ClickHouse down past the grace period: nothing is dead-lettered on an outage
    clock.now += 20
    lookup.fail = True
    out = await stage.retry()
    assert not out.dead_letters and stage.pending == 1 and stage.last_lookup_error
    lookup.fail = False
    out = await stage.retry()
    assert [d.code for d, _ in out.dead_letters] == ["unknown_event_id"] and stage.pending == 0
    assert "never" in out.dead_letters[0][0].reason


async def test_repeated_feedback_is_stored_but_not_counted_twice() -> None:
    stage = _stage(FakeLookup(), Clock())
    stage.remember([_prediction("e1")])
    first = await stage.intake([_msg(_fb("e1"))])
    again = await stage.intake([_msg(_fb("e1", "tech"))])
    assert first.joined[0][0].first and not again.joined[0][0].first


def _drift_config() -> DriftConfig:
    return DriftConfig(error_rate=ErrorRateConfig(grace_period=10, delta=0.002))


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
