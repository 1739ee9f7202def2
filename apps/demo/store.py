"""Everything the demo reads back from ClickHouse, scoped to one run.

A table that does not exist yet reads as empty and is listed in ``missing``, so views do not crash.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from driftline.settings import ClickHouseSettings

DEMO_TASKS_SQL = "('news_topic', 'chat_sentiment')"


@dataclass
class LabelRow:
    """A run's ``labels`` row, as the report reads it."""

    event_id: str
    task: str
    label: str
    confidence: float
    model_version: str
    adapter_hash: str
    event_ts_ms: int
    processed_ts_ms: int
    latency_ms: float


@dataclass
class DriftRow:
    """A drift detection (from ``drift_events`` or a drift alert)."""

    task: str
    detector: str
    signal: str
    detected_ts_ms: int
    statistic: float
    model_version: str
    event_count: int


@dataclass
class VersionRow:
    """A ``model_versions`` row of the run's tasks."""

    task: str
    version: str
    status: str
    reason: str
    metrics: str
    created_ts_ms: int
    updated_ts_ms: int

    @property
    def promoted(self) -> bool:
        """Exported and not rejected: it served (a rejected shadow has a version number too)."""
        return bool(self.version) and self.status != "rejected"


@dataclass
class Counters:
    """Live-view counts per table."""

    labels: dict[str, int] = field(default_factory=dict)
    feedback_joined: int = 0
    alerts: dict[str, int] = field(default_factory=dict)
    drift: dict[str, int] = field(default_factory=dict)
    versions: int = 0
    dead_letters: int = 0


class DemoStore:
    """ClickHouse reads scoped to one demo run; unknown tables read as empty."""

    def __init__(self, settings: ClickHouseSettings, run_id: str, started_ms: int) -> None:
        from driftline.clients import clickhouse_client

        self.client = clickhouse_client(settings)
        self.run_id = run_id
        self.like = f"demo-{run_id}-%"
        self.started_ms = started_ms
        self.missing: set[str] = set()
        # the live view and the publisher's decision check read from worker threads; a
        # clickhouse-driver connection takes one query at a time
        self._lock = threading.Lock()

    def _query(self, table: str, sql: str, params: dict[str, Any] | None = None) -> list[tuple]:
        from clickhouse_driver.errors import ServerException

        try:
            with self._lock:
                rows = self.client.execute(sql, params or {})
        except ServerException as exc:
            if exc.code == 60:  # UNKNOWN_TABLE
                self.missing.add(table)
                return []
            raise
        self.missing.discard(table)
        return rows

    def _params(self) -> dict[str, Any]:
        return {"like": self.like, "since": self.started_ms}

    def counters(self) -> Counters:
        """Cheap counts for the live view (no FINAL: approximate under replays, exact otherwise)."""
        p = self._params()
        c = Counters()
        c.labels = dict(
            self._query(
                "labels",
                "SELECT task, uniqExact(event_id) FROM labels WHERE event_id LIKE %(like)s GROUP BY task",
                p,
            )
        )
        rows = self._query(
            "feedback", "SELECT uniqExact(event_id) FROM feedback WHERE event_id LIKE %(like)s", p
        )
        c.feedback_joined = int(rows[0][0]) if rows else 0
        c.alerts = dict(
            self._query(
                "alerts",
                "SELECT kind, uniqExact(alert_id) FROM alerts WHERE created_ts_ms >= %(since)s "
                f"AND task IN {DEMO_TASKS_SQL} GROUP BY kind",
                p,
            )
        )
        c.drift = dict(
            self._query(
                "drift_events",
                "SELECT task, uniqExact(drift_id) FROM drift_events WHERE detected_ts_ms >= %(since)s "
                f"AND task IN {DEMO_TASKS_SQL} GROUP BY task",
                p,
            )
        )
        rows = self._query(
            "model_versions",
            "SELECT uniqExact(task, version, adapter_hash) FROM model_versions "
            f"WHERE created_ts_ms >= %(since)s AND task IN {DEMO_TASKS_SQL}",
            p,
        )
        c.versions = int(rows[0][0]) if rows else 0
        rows = self._query(
            "dead_letters",
            "SELECT count() FROM dead_letters WHERE toUInt64(received_time) * 1000 >= %(since)s",
            p,
        )
        c.dead_letters = int(rows[0][0]) if rows else 0
        return c

    def labels(self) -> list[LabelRow]:
        """The run's label rows (FINAL: one per event)."""
        rows = self._query(
            "labels",
            "SELECT event_id, task, label, confidence, model_version, adapter_hash, event_ts_ms, "
            "processed_ts_ms, latency_ms FROM labels FINAL WHERE event_id LIKE %(like)s",
            self._params(),
        )
        return [LabelRow(*row) for row in rows]

    def joined_feedback(self) -> dict[str, tuple[str, int]]:
        """event_id -> (model_version, correct) as joined by the pipeline's feedback join."""
        rows = self._query(
            "feedback",
            "SELECT event_id, model_version, correct FROM feedback FINAL WHERE event_id LIKE %(like)s",
            self._params(),
        )
        return {event_id: (version, int(correct)) for event_id, version, correct in rows}

    def drift_events(self) -> list[DriftRow]:
        """Drift detections of the run's tasks since it started, oldest first."""
        rows = self._query(
            "drift_events",
            "SELECT task, detector, signal, detected_ts_ms, statistic, model_version, event_count "
            f"FROM drift_events FINAL WHERE detected_ts_ms >= %(since)s AND task IN {DEMO_TASKS_SQL} "
            "ORDER BY detected_ts_ms",
            self._params(),
        )
        return [DriftRow(*row) for row in rows]

    def drift_alerts(self) -> list[DriftRow]:
        """Drift as seen on the alerts table (for pipelines that publish alerts but no drift rows)."""
        rows = self._query(
            "alerts",
            "SELECT task, subject, kind, created_ts_ms, 0.0, '', 0 FROM alerts FINAL "
            f"WHERE kind = 'drift' AND created_ts_ms >= %(since)s AND task IN {DEMO_TASKS_SQL} "
            "ORDER BY created_ts_ms",
            self._params(),
        )
        return [DriftRow(*row) for row in rows]

    def versions(self) -> list[VersionRow]:
        """Registry rows created since the run started, oldest first."""
        rows = self._query(
            "model_versions",
            "SELECT task, version, status, reason, metrics, created_ts_ms, updated_ts_ms "
            f"FROM model_versions FINAL WHERE created_ts_ms >= %(since)s AND task IN {DEMO_TASKS_SQL} "
            "ORDER BY created_ts_ms",
            self._params(),
        )
        return [VersionRow(*row) for row in rows]

    def model_alerts(self) -> list[tuple[str, str, int, str, str]]:
        """(task, severity, created_ts_ms, subject, message) of updater decisions and failures."""
        return self._query(
            "alerts",
            "SELECT task, severity, created_ts_ms, subject, message FROM alerts FINAL "
            f"WHERE kind = 'model' AND created_ts_ms >= %(since)s AND task IN {DEMO_TASKS_SQL} "
            "ORDER BY created_ts_ms",
            self._params(),
        )

    def close(self) -> None:
        """Disconnect the client."""
        self.client.disconnect()
