"""Registry, feedback view and the updater's training query against the real ClickHouse (18.16).

Each test run applies all migrations into its own database and drops it afterwards, so parallel
runs and the shared ``driftline`` database are never touched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from driftline.online.labels.join import FeedbackJoiner
from driftline.online.serving.registry import ModelRegistry, RegistryError
from driftline.online.update.sources import ClickHouseSource
from driftline.schema.records import DriftEvent, FeedbackRecord, ModelRecord, ModelStatus, insert_sql
from driftline.settings import Settings
from tests.conftest import migrated_database

pytestmark = pytest.mark.stack


@pytest.fixture
def db(settings: Settings) -> Iterator[object]:
    with migrated_database(settings, "online_") as client:
        yield client


def test_registry_lifecycle(db) -> None:
    registry = ModelRegistry(db)
    v1 = registry.save(
        ModelRecord(task="news_topic", version=1, adapter_hash="h1", status=ModelStatus.SERVING)
    )
    rejected = registry.save(
        ModelRecord(
            task="news_topic",
            adapter_hash="h2",
            parent_hash="h1",
            status=ModelStatus.REJECTED,
            metrics={"recent_gain": -0.1},
            reason="gain below margin",
        )
    )
    v3 = registry.save(
        ModelRecord(
            task="news_topic",
            version=3,
            adapter_hash="h3",
            parent_hash="h1",
            status=ModelStatus.SERVING,
            metrics={"candidate_recent": 0.9},
        )
    )
    registry.set_status(v1, ModelStatus.RETIRED, "replaced by version 3")
    rows = registry.list("news_topic")
    assert [(r.version, r.status) for r in rows] == [
        (1, ModelStatus.RETIRED),
        (0, ModelStatus.REJECTED),
        (3, ModelStatus.SERVING),
    ]
    assert rows[1].metrics == {"recent_gain": -0.1} and rows[1].reason == rejected.reason
    assert registry.serving("news_topic").adapter_hash == "h3"
    assert registry.rollback_target("news_topic").version == 1
    registry.set_status(v3, ModelStatus.ROLLED_BACK, "operator rollback")
    assert registry.serving("news_topic") is None
    with pytest.raises(RegistryError):
        registry.get("news_topic", 7)


def test_feedback_view_and_training_query(db) -> None:
    now = datetime(2024, 5, 1, 10, 0, 0)
    db.execute(
        "INSERT INTO labels (task, event_id, event_time, processed_time, processed_ts_ms, text, label,"
        " model_version) VALUES",
        [("news_topic", f"e{i}", now, now, i, f"article number {i}", "sport", "1") for i in range(4)],
    )
    joiner = FeedbackJoiner()
    for i in range(4):
        joiner.add_prediction(
            {
                "event_id": f"e{i}",
                "task": "news_topic",
                "label": "sport",
                "model_version": "1",
                "adapter_hash": "h1",
            }
        )
    rows = [
        joiner.join({"event_id": f"e{i}", "task": "news_topic", "label": lab, "timestamp": 1714557600 + i})
        for i, lab in enumerate(["sport", "sport", "tech", "sport"])
    ]
    rows.append(
        joiner.join({"event_id": "e2", "task": "news_topic", "label": "sport", "timestamp": 1714557700})
    )  # correction replaces the earlier label
    db.execute(insert_sql(FeedbackRecord.TABLE, FeedbackRecord.COLUMNS), [r.record().to_row() for r in rows])
    accuracy = db.execute("SELECT task, model_version, adapter_hash, n, accuracy FROM feedback_accuracy")
    assert accuracy == [("news_topic", "1", "h1", 4, 1.0)]
    examples = ClickHouseSource(db).recent_examples("news_topic", limit=3)
    assert [e.text for e in examples] == ["article number 1", "article number 3", "article number 2"]
    assert ClickHouseSource(db).count_since("news_topic", 0) == 5
    # a run that starts later (the demo) does not learn from these labels
    later = int(time.time() * 1000) + 3_600_000
    assert ClickHouseSource(db, since_ts_ms=later).recent_examples("news_topic", limit=3) == []
    # the updater's holdout: only feedback joined after the drift began
    assert ClickHouseSource(db).recent_examples("news_topic", limit=3, since_ts_ms=later) == []
    assert len(ClickHouseSource(db).recent_examples("news_topic", limit=10, since_ts_ms=1)) == 4
    # ... nor judge a version by them (the rollback watch's baseline, the shadow's live evidence)
    assert ClickHouseSource(db).outcomes("news_topic", 1, "h1", 10, newest=True) == [True] * 4
    assert ClickHouseSource(db, since_ts_ms=later).outcomes("news_topic", 1, "h1", 10, newest=True) == []
    assert ClickHouseSource(db, since_ts_ms=later).graded_since("news_topic", "1", 0, 10) == []


def test_drift_events_table_takes_event_rows(db) -> None:
    event = DriftEvent(
        detector="label_mix",
        task="news_topic",
        statistic=0.4,
        window=200,
        model_version="1",
        adapter_hash="h1",
        event_count=900,
        signal="psi",
    )
    db.execute(insert_sql(DriftEvent.TABLE, DriftEvent.COLUMNS), [event.to_row()])
    assert db.execute("SELECT detector, window_size, event_count FROM drift_events") == [
        ("label_mix", 200, 900)
    ]


def test_served_probabilities_per_version_in_serving_order(db) -> None:
    """What the rollback watch estimates accuracy from: one version's probabilities, bounded and ordered."""
    now = datetime(2024, 5, 1, 10, 0, 0)
    rows = [  # version 1 served e0..e4 at ts 10..14, version 2 e5 and e6 (no probabilities)
        ("news_topic", f"e{i}", now, now, 10 + i, "1" if i < 5 else "2", "h1" if i < 5 else "h2",
         [0.1 * i, 1 - 0.1 * i] if i < 6 else [])
        for i in range(7)
    ]  # fmt: skip
    db.execute(
        "INSERT INTO labels (task, event_id, event_time, processed_time, processed_ts_ms, model_version,"
        " adapter_hash, probabilities) VALUES",
        rows,
    )
    source = ClickHouseSource(db)
    first = [p[0] for p in source.served_probabilities("news_topic", 1, "h1", 3)]
    assert first == pytest.approx([0.0, 0.1, 0.2])
    last = [p[0] for p in source.served_probabilities("news_topic", 1, "h1", 2, newest=True)]
    assert last == pytest.approx([0.3, 0.4])  # the newest two, oldest first
    assert len(source.served_probabilities("news_topic", 1, "h1", 10, since_ts_ms=13)) == 2
    assert len(source.served_probabilities("news_topic", 1, "other", 10)) == 0
    assert len(source.served_probabilities("news_topic", 2, "h2", 10)) == 1  # e6 is left out
    assert ClickHouseSource(db, since_ts_ms=14).served_probabilities("news_topic", 1, "h1", 10) == [
        pytest.approx([0.4, 0.6])
    ]
