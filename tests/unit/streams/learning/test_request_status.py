"""Label-request status passes (streams.learning.request_status) on chDB (modern ClickHouse).

A request with feedback becomes ``answered``, one left alone past ``expire_after_s`` becomes
``expired``, a recent one stays ``requested``, an answer beats the expiry, a late answer turns an
expired request into an answered one, a repeated pass writes no row, and the request's other
columns are kept. tests/stack/streams/test_request_status.py runs the same story on the server.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import pytest

from driftline.schema.migrate import MIGRATIONS_DIR, split_statements
from driftline.schema.records import FeedbackRecord, LabelRequestRecord
from driftline.streams.learning.request_status import RequestStatus

DAY_S = 86400.0


def _request(event_id: str, age_s: float) -> LabelRequestRecord:
    at_ms = int((time.time() - age_s) * 1000)  # relative to when the test runs, not to import
    return LabelRequestRecord(
        task="news_topic", event_id=event_id, text=f"text of {event_id}", label="tech", confidence=0.41,
        label_names=["business", "tech"], probabilities=[0.59, 0.41], model_name="m", model_version="3",
        adapter_hash="h", reason="random", uncertainty=0.8, sampling_probability=0.0625,
        event_ts_ms=at_ms, requested_ts_ms=at_ms, updated_ts_ms=at_ms,
    )  # fmt: skip


def _feedback(event_id: str, age_s: float) -> FeedbackRecord:
    at_ms = int((time.time() - age_s) * 1000)  # relative to when the test runs, not to import
    return FeedbackRecord(
        task="news_topic", event_id=event_id, label="business", source="annotator:ann-1",
        feedback_ts_ms=at_ms, joined_ts_ms=at_ms, predicted_label="tech", correct=False, confidence=0.41,
        model_version="3", adapter_hash="h",
    )  # fmt: skip


class _Chdb:
    """chDB behind the ``execute(sql, params)`` a clickhouse-driver client offers."""

    def __init__(self) -> None:
        from chdb import session

        self.session = session.Session()
        self.session.query("CREATE DATABASE IF NOT EXISTS request_status_test")
        self.session.query("USE request_status_test")

    @staticmethod
    def _literal(value: Any) -> str:
        if isinstance(value, str):
            return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        if isinstance(value, datetime):
            return str(int(value.timestamp()))
        if isinstance(value, list | tuple):
            return "[" + ", ".join(_Chdb._literal(v) for v in value) + "]"
        return str(int(value)) if isinstance(value, bool) else str(value)

    def execute(self, sql: str, params: Any = None) -> list[tuple]:
        if isinstance(params, list):  # rows to insert
            values = ", ".join("(" + ", ".join(self._literal(v) for v in row) + ")" for row in params)
            self.session.query(f"{sql} {values}")
            return []
        if params:
            sql = sql % {k: self._literal(v) for k, v in params.items()}
        out = str(self.session.query(sql, "JSONCompact"))
        return [tuple(r) for r in json.loads(out)["data"]] if out.strip() else []

    def disconnect(self) -> None:
        pass


def _insert(client: Any, record_type: type, rows: list[tuple]) -> None:
    client.execute(f"INSERT INTO {record_type.TABLE} ({', '.join(record_type.COLUMNS)}) VALUES", rows)


def _when(row: tuple, columns: tuple[str, ...]) -> dict[str, Any]:
    return dict(zip(columns, row, strict=True))


def _story(client: Any) -> None:
    requests = [_request("fresh", 60), _request("answered", 60), _request("stale", 2 * DAY_S),
                _request("stale-answered", 2 * DAY_S)]  # fmt: skip
    _insert(client, LabelRequestRecord, [r.to_row() for r in requests])
    _insert(
        client, FeedbackRecord, [_feedback("answered", 30).to_row(), _feedback("stale-answered", 30).to_row()]
    )
    status = RequestStatus(lambda: client, lambda task: DAY_S, ["news_topic", "chat_sentiment"])

    def final() -> dict[str, dict[str, Any]]:
        columns = LabelRequestRecord.COLUMNS
        rows = client.execute(f"SELECT {', '.join(columns)} FROM label_requests FINAL ORDER BY event_id")
        return {r[1]: _when(r, columns) for r in rows}

    def raw_rows() -> int:
        return client.execute("SELECT count() FROM label_requests")[0][0]

    status.update_now()
    after = final()
    assert {k: v["status"] for k, v in after.items()} == {
        "answered": "answered", "fresh": "requested", "stale": "expired", "stale-answered": "answered",
    }  # fmt: skip
    before = {r.event_id: r for r in requests}
    for event_id in ("answered", "stale"):
        row, old = after[event_id], before[event_id]
        assert row["text"] == old.text and row["reason"] == old.reason and row["model_version"] == "3"
        assert row["requested_ts_ms"] == old.requested_ts_ms  # when it was asked stays
        assert row["updated_ts_ms"] > old.updated_ts_ms
        assert float(row["sampling_probability"]) == pytest.approx(0.0625)
    written = raw_rows()
    assert written == 4 + 3

    status.update_now()  # nothing changed: nothing written
    assert raw_rows() == written

    _insert(client, FeedbackRecord, [_feedback("stale", 1).to_row()])  # a late answer
    status.update_now()
    assert final()["stale"]["status"] == "answered"
    assert final()["fresh"]["status"] == "requested"


def test_status_passes_on_chdb() -> None:
    client = _Chdb()
    try:
        for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
            for statement in split_statements(path.read_text()):
                client.session.query(statement)
        _story(client)
    finally:
        client.session.query("DROP DATABASE IF EXISTS request_status_test")
        client.session.close()
