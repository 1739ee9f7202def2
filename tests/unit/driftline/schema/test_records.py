"""Each record of ``driftline.schema.records`` against the table the migrations create for it.

The migrations are applied to chDB (in-process ClickHouse), and every record's ``COLUMNS`` must be
the table's columns in order, and its ``to_row()`` one value per column, so a migration and its
record cannot drift apart; every table the workers write has a record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from driftline.schema.records import (
    AlertRecord,
    DeadLetterRecord,
    DriftEvent,
    ExplanationRecord,
    FeedbackRecord,
    LabelRequestRecord,
    ModelRecord,
    ModelStatus,
    PredictionRecord,
    RescoredRecord,
    RescoreProgressRecord,
    ShadowRecord,
    TaskLabelRecord,
)
from tests.support.analytics_samples import migrated_chdb

SAMPLES = [
    PredictionRecord(
        event_id="e1", task="news_topic", event_kind="news", subject="sport", topic="t", partition=1,
        offset=7, event_ts_ms=1_700_000_000_000, processed_ts_ms=1_700_000_000_500, text="x", source="s",
        channel="c", language="en", label="sport", confidence=0.9, label_names=["sport", "tech"],
        probabilities=[0.9, 0.1], explanation=[("goal", 0.5)], model_name="m", model_version="1",
        adapter_hash="h", truncated=False, latency_ms=3.5,
    ),
    AlertRecord(alert_id="a1", kind="surge", task="news_topic", created_ts_ms=1_700_000_000_000,
                subject="sport", message="m", evidence={"n": 3}),
    DeadLetterRecord(topic="t", partition=0, offset=3, received_ts_ms=1_700_000_000_000, reason="x: y",
                     code="x", error_type="X", payload_b64="", payload_size=0),
    FeedbackRecord(task="news_topic", event_id="e1", label="tech", source="s",
                   feedback_ts_ms=1_700_000_000_000, predicted_label="sport", correct=False),
    DriftEvent(detector="error_rate", task="news_topic", statistic=0.3, window=10, model_version="1",
               adapter_hash="h", event_count=100, details={"x": 1}),
    ModelRecord(task="news_topic", version=2, adapter_hash="h", status=ModelStatus.SERVING,
                metrics={"accuracy": 0.9}),
    ExplanationRecord(task="news_topic", event_id="e1", model_version="1", model_name="m", adapter_hash="h",
                      label="sport", confidence=0.55, explanation=[("goal", 0.5), ("match", -0.25)],
                      reason="uncertain", event_ts_ms=1_700_000_000_000, computed_ts_ms=1_700_000_003_000,
                      latency_ms=12.5),
    LabelRequestRecord(task="news_topic", event_id="e1", text="x", label="sport", confidence=0.4,
                       label_names=["sport", "tech"], probabilities=[0.4, 0.6], model_name="m",
                       model_version="1", reason="random", uncertainty=0.8, sampling_probability=0.01,
                       event_ts_ms=1_700_000_000_000),
    TaskLabelRecord(task="news_topic", label="science", status="proposed", source="feedback",
                    examples=["e1"]),
    RescoredRecord(run_id="r1", task="news_topic", event_id="e1", topic="t", partition=0, offset=3,
                   event_ts_ms=1_700_000_000_000, model_name="m", model_version="2", adapter_hash="h",
                   label="sport", confidence=0.8, label_names=["sport", "tech"], probabilities=[0.8, 0.2]),
    RescoreProgressRecord(run_id="r1", task="news_topic", model_version="2", topic="t", partition=0,
                          start_offset=0, next_offset=5, end_offset=9, from_ts_ms=1, to_ts_ms=2),
    ShadowRecord(task="news_topic", event_id="e1", model_name="m", event_ts_ms=1_700_000_000_000,
                 serving_version="1", serving_label="sport", serving_confidence=0.9, shadow_version="2",
                 shadow_adapter_hash="h2", shadow_label="tech", shadow_confidence=0.6,
                 label_names=["sport", "tech"], probabilities=[0.4, 0.6], latency_ms=3.0),
]  # fmt: skip


@pytest.fixture(scope="module")
def table_columns() -> Iterator[dict[str, tuple[str, ...]]]:
    """table -> its column names in order, from the migrations applied to chDB."""
    with migrated_chdb("records_test") as sess:
        result = json.loads(
            str(
                sess.query(
                    "SELECT table, name FROM system.columns WHERE database = 'records_test' "
                    "ORDER BY table, position",
                    "JSON",
                )
            )
        )["data"]
    columns: dict[str, list[str]] = {}
    for row in result:
        columns.setdefault(row["table"], []).append(row["name"])
    yield {table: tuple(names) for table, names in columns.items()}


@pytest.mark.parametrize("record", SAMPLES, ids=lambda r: r.TABLE)
def test_record_columns_are_the_migrated_table_columns(
    record, table_columns: dict[str, tuple[str, ...]]
) -> None:
    assert record.TABLE in table_columns, f"no migration creates {record.TABLE}"
    assert table_columns[record.TABLE] == record.COLUMNS
    assert len(record.to_row()) == len(record.COLUMNS)


def test_every_written_table_has_a_record() -> None:
    assert {r.TABLE for r in SAMPLES} == {
        "labels", "alerts", "dead_letters", "feedback", "drift_events", "model_versions", "explanations",
        "label_requests", "task_labels", "rescored_labels", "rescore_progress", "shadow_predictions",
    }  # fmt: skip


def test_explanation_row_keeps_words_and_scores_in_step_and_reads_back() -> None:
    record = next(r for r in SAMPLES if isinstance(r, ExplanationRecord))
    row = dict(zip(record.COLUMNS, record.to_row(), strict=True))
    assert row["tokens"] == ["goal", "match"] and row["scores"] == [0.5, -0.25]
    assert (
        row["event_time"].timestamp() == 1_700_000_000 and row["computed_time"].timestamp() == 1_700_000_003
    )
    assert row["error"] == "" and row["method"] == "grad_x_input"
    assert ExplanationRecord.from_row(record.to_row()) == record
