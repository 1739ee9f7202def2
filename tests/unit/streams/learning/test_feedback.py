"""The feedback join (streams.learning.feedback), no Kafka: joins, the grace rule for unknown ids, and
repeated feedback stored but counted once.

The lookup is an in-memory fake here; tests/stack/streams/test_learning.py runs the same stage
against ClickHouse ``labels`` inside real workers.
"""

from __future__ import annotations

import json
from typing import Any

from driftline.schema.records import FeedbackRecord, PredictionRecord
from driftline.settings import LearningConfig
from driftline.streams.decode import dead_letter
from driftline.streams.learning.feedback import FeedbackStage
from driftline.streams.learning.lookup import Key
from driftline.streams.stages import RawMessage


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
