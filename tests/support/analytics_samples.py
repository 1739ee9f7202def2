"""Sample rows for the analytics views and the dashboard, as plain SQL both engines accept.

Rows are built from the pipeline's own records (``driftline.schema.records``: their ``TABLE``,
``COLUMNS`` and ``to_row()``), so the samples have exactly the shape the workers write. The same
INSERT text runs on the 18.16 server (clickhouse-driver) and on chDB, so the two engines see
identical data. Expected figures (event counts, accuracy per model version, ...) are computed here
from the generated rows, next to the rows, so tests compare the views against an independent
Python calculation rather than against numbers copied from a previous run.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from driftline.schema.migrate import MIGRATIONS_DIR, split_statements
from driftline.schema.records import (
    AlertRecord,
    DriftEvent,
    FeedbackRecord,
    ModelRecord,
    ModelStatus,
    PredictionRecord,
    ShadowRecord,
)

NEWS_LABELS = ["business", "entertainment", "politics", "sport", "tech"]
SENTIMENT_LABELS = ["negative", "positive"]
CHANNELS = ["weibo", "wechat", "douban"]


def migration_statements() -> list[str]:
    """Every statement of every migration file, in order (what ``driftline stack up`` applies)."""
    statements: list[str] = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        statements.extend(split_statements(path.read_text()))
    return statements


@contextlib.contextmanager
def migrated_chdb(database: str) -> Iterator[Any]:
    """A chDB (in-process modern ClickHouse) session on ``database`` with every migration applied."""
    from chdb import session

    sess = session.Session()
    try:
        sess.query(f"CREATE DATABASE IF NOT EXISTS {database}")
        sess.query(f"USE {database}")
        for statement in migration_statements():
            sess.query(statement)
        yield sess
    finally:
        sess.close()


def _lit(value) -> str:
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list):
        return "[" + ", ".join(_lit(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(int(value))


@dataclass
class Row:
    """One sample row: a record's table and its values by column."""

    table: str
    values: dict

    @classmethod
    def of(cls, record) -> Row:
        """The row a record writes (its ``TABLE``, ``COLUMNS`` and ``to_row()``)."""
        return cls(record.TABLE, dict(zip(record.COLUMNS, record.to_row(), strict=True)))

    def sql(self) -> str:
        """INSERT ... VALUES text; DateTime values as epoch seconds so no time zone is involved."""
        cols = ", ".join(self.values)
        vals = ", ".join(
            f"toDateTime({int(v.timestamp())})" if isinstance(v, datetime) else _lit(v)
            for v in self.values.values()
        )
        return f"INSERT INTO {self.table} ({cols}) VALUES ({vals})"

    def native(self) -> tuple:
        """The values for clickhouse-driver."""
        return tuple(self.values.values())


@dataclass
class SampleSet:
    news_task: str
    chat_task: str
    base_ts: int  # epoch seconds of the first event, start of a minute
    rows: list[Row] = field(default_factory=list)
    news_events: int = 0
    chat_events: int = 0
    replayed_rows: int = 0
    news_label_counts: Counter = field(default_factory=Counter)
    chat_channel_counts: dict = field(default_factory=lambda: defaultdict(Counter))
    accuracy_by_version: dict = field(default_factory=dict)
    graded_by_version: dict = field(default_factory=dict)
    minutes: set = field(default_factory=set)
    drift_ts: int = 0
    promotion_ts: int = 0
    alert_ids: list[str] = field(default_factory=list)
    shadow_agreement: float = 0.0  # the shadow version's agreement with serving on its mirrored events

    def insert_statements(self) -> list[str]:
        """One INSERT ... VALUES text per row, for chDB (and any engine that parses inline data)."""
        return [row.sql() for row in self.rows]

    def insert_with_driver(self, client) -> int:
        """Insert through a clickhouse-driver ``Client`` (native protocol: inline VALUES would hang)."""
        batches: dict[tuple[str, tuple[str, ...]], list[tuple]] = defaultdict(list)
        for row in self.rows:
            batches[(row.table, tuple(row.values))].append(row.native())
        for (table, columns), values in batches.items():
            client.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES", values)
        return len(self.rows)

    @property
    def tasks(self) -> list[str]:
        return [self.news_task, self.chat_task]


def _label_row(task, event_id, ts, label, labels, channel, version, latency, confidence, processed_ms):
    probs = [round((1 - confidence) / (len(labels) - 1), 4)] * len(labels)
    probs[labels.index(label)] = confidence
    return Row.of(
        PredictionRecord(
            task=task,
            event_id=event_id,
            event_kind="news",
            subject=label,
            topic="driftline.test.events",
            partition=0,
            offset=abs(hash(event_id)) % 100000,
            event_ts_ms=ts * 1000,
            processed_ts_ms=processed_ms,
            text=f"sample text for {event_id} with a 'quote'",
            source="sample",
            channel=channel,
            language="en",
            label=label,
            confidence=confidence,
            label_names=labels,
            probabilities=probs,
            explanation=[("sample", 0.5), ("tokens", 0.25)],
            model_name=task,
            model_version=version,
            adapter_hash=f"hash-{version}",
            truncated=False,
            latency_ms=latency,
        )
    )


def build_samples(suffix: str = "", now: float | None = None, minutes: int = 20) -> SampleSet:
    """Two tasks' worth of labels, feedback, drift, alerts and model versions over ``minutes``.

    ``suffix`` makes the task names unique (tests sharing a database); the empty suffix gives the
    real task names the documentation's example queries filter on.
    """
    now = time.time() if now is None else now
    base = int(now // 60) * 60 - minutes * 60
    s = SampleSet(news_task=f"news_topic{suffix}", chat_task=f"chat_sentiment{suffix}", base_ts=base)
    half = base + (minutes // 2) * 60
    s.promotion_ts = half
    s.drift_ts = half - 60
    correct = Counter()
    graded = Counter()

    # news: 2 events a minute; model version 1 for the first half, 2 after the promotion.
    for i in range(minutes * 2):
        ts = base + i * 30
        version = "1" if ts < half else "2"
        label = NEWS_LABELS[i % len(NEWS_LABELS)]
        eid = f"n{suffix}-{i}"
        s.rows.append(
            _label_row(
                s.news_task, eid, ts, label, NEWS_LABELS, "bbc", version, 10.0 + i, 0.6 + (i % 4) / 10,
                ts * 1000 + 250,
            )
        )  # fmt: skip
        s.news_events += 1
        s.news_label_counts[label] += 1
        s.minutes.add(ts - ts % 60)
        if i % 2 == 0:  # feedback on every second event; version 1 is wrong on every third graded event
            wrong = version == "1" and (i // 2) % 3 == 0
            truth = NEWS_LABELS[(i + 1) % len(NEWS_LABELS)] if wrong else label
            s.rows.append(_feedback_row(s.news_task, eid, truth, label, version, ts + 90))
            graded[version] += 1
            correct[version] += int(not wrong)
    # one replayed event: same (task, event_id), processed again later
    first = s.rows[0].values
    s.rows.append(
        _label_row(
            s.news_task, first["event_id"], base, first["label"], NEWS_LABELS, "bbc", "1", 99.0, 0.6,
            base * 1000 + 5000,
        )
    )  # fmt: skip
    s.replayed_rows = 1

    # chat: 3 channels, sentiment leaning positive on weibo and negative on douban.
    for i in range(minutes * 3 // 2):
        ts = base + i * 40
        channel = CHANNELS[i % 3]
        positive = (i % 3 == 0) or (i % 3 == 1 and i % 2 == 0)
        label = "positive" if positive else "negative"
        s.rows.append(
            _label_row(
                s.chat_task, f"c{suffix}-{i}", ts, label, SENTIMENT_LABELS, channel, "1", 5.0 + i % 7,
                0.8, ts * 1000 + 100,
            )
        )  # fmt: skip
        s.chat_events += 1
        s.chat_channel_counts[channel][label] += 1
        s.minutes.add(ts - ts % 60)

    s.accuracy_by_version = {v: correct[v] / graded[v] for v in graded}
    s.graded_by_version = dict(graded)

    # model versions (Triton numbers): 1 serving from the start, 3 rejected, 2 promoted at half time.
    for version, status, ts, acc in (("1", "promoted", base - 60, 0.81), ("3", "rejected", half - 30, 0.79),
                                     ("2", "promoted", half, 0.93)):  # fmt: skip
        if status == "promoted" and version != "1":
            s.rows.append(_alert_row(f"m{suffix}-{version}", "model", s.news_task, ts, "info", f"v{version}"))
            s.alert_ids.append(f"m{suffix}-{version}")
        s.rows.append(
            Row.of(
                ModelRecord(
                    task=s.news_task,
                    version=int(version),
                    adapter_hash=f"hash-{version}",
                    parent_hash="hash-1" if version != "1" else "",
                    status=ModelStatus(status),
                    metrics={
                        "metric": "accuracy",
                        "accuracy": acc,
                        "baseline_accuracy": 0.8,
                        "recent_gain": acc - 0.8,
                    },
                    reason=f"sample {status}",
                    artifact_path=f"/tmp/sample/{version}",
                    created_ts_ms=ts * 1000,
                    updated_ts_ms=ts * 1000 + 1,
                )
            )
        )

    # drift: one detection mirrored as an alert (same id), one only in drift_events.
    for drift_id, ts, mirrored in (
        (f"d{suffix}-1", s.drift_ts, True),
        (f"d{suffix}-2", s.drift_ts + 30, False),
    ):
        s.rows.append(
            Row.of(
                DriftEvent(
                    drift_id=drift_id,
                    task=s.news_task,
                    detector="error_rate_adwin",
                    signal="error_rate",
                    detected_ts_ms=ts * 1000,
                    statistic=0.42,
                    window=60,
                    event_count=200,
                    model_version="1",
                    adapter_hash="hash-1",
                    severity="warning",
                )
            )
        )
        if mirrored:
            s.rows.append(_alert_row(drift_id, "drift", s.news_task, ts, "warning", "error_rate_adwin"))
            s.alert_ids.append(drift_id)
    # shadow: version 2 mirrored the last 8 version-1 events before it served; it disagreed on 2
    news_rows = [r.values for r in s.rows if r.table == "labels" and r.values["task"] == s.news_task]
    mirrored_rows = [v for v in news_rows if v["model_version"] == "1"][-9:-1]
    for i, v in enumerate(mirrored_rows):
        other = NEWS_LABELS[(NEWS_LABELS.index(v["label"]) + 1) % len(NEWS_LABELS)]
        s.rows.append(
            Row.of(
                ShadowRecord(
                    task=s.news_task, event_id=v["event_id"], model_name=s.news_task,
                    event_ts_ms=int(v["event_ts_ms"]), mirrored_ts_ms=int(v["event_ts_ms"]) + 500,
                    serving_version="1", serving_label=v["label"], serving_confidence=v["confidence"],
                    shadow_version="2", shadow_adapter_hash="hash-2",
                    shadow_label=other if i < 2 else v["label"], shadow_confidence=0.7,
                    label_names=[v["label"]], probabilities=[0.7],
                )
            )
        )  # fmt: skip
    s.shadow_agreement = 6 / 8
    dl_id = f"a{suffix}-dl"
    s.rows.append(_alert_row(dl_id, "dead_letter", s.chat_task, base + 300, "error", "driftline.chat.events"))
    s.alert_ids.append(dl_id)
    return s


def _feedback_row(task: str, event_id: str, label: str, predicted: str, version: str, ts: int) -> Row:
    return Row.of(
        FeedbackRecord(
            task=task,
            event_id=event_id,
            label=label,
            source="sample",
            feedback_ts_ms=ts * 1000,
            joined_ts_ms=ts * 1000 + 10,
            predicted_label=predicted,
            correct=label == predicted,
            confidence=0.7,
            model_version=version,
            adapter_hash=f"hash-{version}",
        )
    )


def _alert_row(alert_id: str, kind: str, task: str, ts: int, severity: str, subject: str) -> Row:
    return Row.of(
        AlertRecord(
            alert_id=alert_id,
            kind=kind,
            task=task,
            created_ts_ms=ts * 1000,
            severity=severity,
            subject=subject,
            message=f"sample {kind} alert on {task}",
            evidence={"sample": True},
        )
    )
