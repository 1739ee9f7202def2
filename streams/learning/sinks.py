"""ClickHouse sinks for ``feedback`` and ``drift_events`` (migration 0003), on the one ``ClickHouseSink``.

Rows come from the online library's own row builders (``JoinedFeedback.to_row``,
``DriftEvent.to_row``) so the column meaning lives in one place; here they only become tuples in
column order, with the ``DateTime`` values made timezone-aware UTC like every other sink's (a naive
datetime would be read in the client's local zone).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from driftline.online.drift import DriftEvent
from driftline.online.feedback import JoinedFeedback
from driftline.streams.sinks.clickhouse import ClickHouseSink

FEEDBACK_COLUMNS = (
    "task",
    "event_id",
    "label",
    "source",
    "feedback_time",
    "feedback_ts_ms",
    "joined_ts_ms",
    "predicted_label",
    "correct",
    "confidence",
    "model_version",
    "adapter_hash",
)

DRIFT_COLUMNS = (
    "drift_id",
    "task",
    "detector",
    "signal",
    "detected_time",
    "detected_ts_ms",
    "statistic",
    "window_size",
    "event_count",
    "model_version",
    "adapter_hash",
    "severity",
    "details",
)


def _row(values: dict[str, Any], columns: tuple[str, ...]) -> tuple[Any, ...]:
    out = []
    for name in columns:
        value = values[name]
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        out.append(value)
    return tuple(out)


def feedback_row(joined: JoinedFeedback) -> tuple[Any, ...]:
    """A ``feedback`` row in column order."""
    return _row(joined.to_row(), FEEDBACK_COLUMNS)


def drift_row(event: DriftEvent) -> tuple[Any, ...]:
    """A ``drift_events`` row in column order."""
    return _row(event.to_row(), DRIFT_COLUMNS)


def feedback_sink(**kw: Any) -> ClickHouseSink:
    """The ClickHouse ``feedback`` sink."""
    return ClickHouseSink("feedback", FEEDBACK_COLUMNS, **kw)


def drift_events_sink(**kw: Any) -> ClickHouseSink:
    """The ClickHouse ``drift_events`` sink."""
    return ClickHouseSink("drift_events", DRIFT_COLUMNS, **kw)
