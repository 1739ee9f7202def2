"""ClickHouse sinks for ``labels``, ``alerts`` and ``dead_letters`` (tables from migration 0001).

Idempotence: a redelivered event (worker crash after the insert but before the offset commit, or a
retried insert whose first attempt did land) is written again. We rely on the tables, not on insert
deduplication: ``labels`` is a ``ReplacingMergeTree(processed_ts_ms) ORDER BY (task, event_id)`` so
duplicates collapse to the newest row on merge, and readers that need exactness now query with
``FINAL``. Insert-block deduplication is not used because it only exists for Replicated tables on
ClickHouse 18.16 (the local server) and depends on identical blocks, which re-batching after a
restart does not give. ``alerts`` collapses the same way on ``(kind, alert_id)``; ``dead_letters`` is
a plain log (a redelivered bad message appears twice, with the same topic/partition/offset, so
``SELECT DISTINCT topic, partition, kafka_offset`` counts it once).

The driver is synchronous, so inserts run in a worker thread (``asyncio.to_thread``) to keep the
event loop (Kafka heartbeats, the web server) responsive during slow inserts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from clickhouse_driver import Client

from driftline.clients import clickhouse_client
from driftline.settings import ClickHouseSettings, get_settings
from driftline.streams.metrics import PipelineMetrics
from driftline.streams.schemas import AlertRecord, DeadLetterRecord, PredictionRecord
from driftline.streams.sinks.base import BatchingSink


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)


LABEL_COLUMNS = (
    "task", "event_id", "topic", "partition", "kafka_offset", "event_time", "processed_time",
    "event_ts_ms", "processed_ts_ms", "text", "source", "channel", "language", "label", "confidence",
    "label_names", "probabilities", "explanation", "model_name", "model_version", "adapter_hash",
    "truncated", "latency_ms",
)  # fmt: skip


def label_row(p: PredictionRecord) -> tuple[Any, ...]:
    return (
        p.task, p.event_id, p.topic, p.partition, p.offset, _dt(p.event_ts_ms), _dt(p.processed_ts_ms),
        p.event_ts_ms, p.processed_ts_ms, p.text, p.source, p.channel, p.language, p.label, p.confidence,
        p.label_names, p.probabilities, [token for token, _ in p.explanation], p.model_name,
        p.model_version, p.adapter_hash, int(p.truncated), p.latency_ms,
    )  # fmt: skip


ALERT_COLUMNS = (
    "alert_id", "kind", "task", "created_time", "created_ts_ms", "severity", "subject", "message", "evidence",
)  # fmt: skip


def alert_row(a: AlertRecord) -> tuple[Any, ...]:
    return (
        a.alert_id, a.kind, a.task, _dt(a.created_ts_ms), a.created_ts_ms, a.severity, a.subject, a.message,
        json.dumps(a.evidence, ensure_ascii=False, sort_keys=True),
    )  # fmt: skip


DEAD_LETTER_COLUMNS = (
    "topic", "partition", "kafka_offset", "received_time", "reason", "error_type", "payload_b64",
    "payload_size",
)  # fmt: skip


def dead_letter_row(d: DeadLetterRecord) -> tuple[Any, ...]:
    return (
        d.topic, d.partition, d.offset, _dt(d.received_ts_ms), d.reason, d.error_type, d.payload_b64,
        d.payload_size,
    )  # fmt: skip


class ClickHouseSink(BatchingSink[tuple[Any, ...]]):
    """Batched ``INSERT INTO <table> (<columns>) VALUES`` through clickhouse-driver."""

    def __init__(
        self,
        table: str,
        columns: Sequence[str],
        *,
        settings: ClickHouseSettings | None = None,
        **batching: Any,
    ) -> None:
        super().__init__(**batching)
        self.name = table
        self.table = table
        self.columns = tuple(columns)
        self._settings = settings or get_settings().clickhouse
        self._client: Client | None = None
        self._sql = f"INSERT INTO {table} ({', '.join(self.columns)}) VALUES"

    def _connect(self) -> Client:
        if self._client is None:
            s = self._settings
            self._client = clickhouse_client(s, settings={"insert_block_size": 1_048_576})
        return self._client

    def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        client = self._connect()
        try:
            client.execute(self._sql, rows, types_check=False)
        except Exception:
            client.disconnect()  # a half-broken connection must not be reused by the retry
            self._client = None
            raise

    async def _write(self, rows: list[tuple[Any, ...]]) -> None:
        await asyncio.to_thread(self._insert, rows)

    async def ping(self) -> bool:
        """Whether ClickHouse answers ``SELECT 1``."""

        def _ping() -> bool:
            return self._connect().execute("SELECT 1") == [(1,)]

        try:
            return await asyncio.to_thread(_ping)
        except Exception:
            self._client = None
            return False


def _sink(table: str, columns: Sequence[str], metrics: PipelineMetrics | None, **kw: Any) -> ClickHouseSink:
    return ClickHouseSink(table, columns, metrics=metrics, **kw)


def labels_sink(metrics: PipelineMetrics | None = None, **kw: Any) -> ClickHouseSink:
    """The ClickHouse ``labels`` sink."""
    return _sink("labels", LABEL_COLUMNS, metrics, **kw)


def alerts_sink(metrics: PipelineMetrics | None = None, **kw: Any) -> ClickHouseSink:
    """The ClickHouse ``alerts`` sink."""
    return _sink("alerts", ALERT_COLUMNS, metrics, **kw)


def dead_letters_sink(metrics: PipelineMetrics | None = None, **kw: Any) -> ClickHouseSink:
    """The ClickHouse ``dead_letters`` sink."""
    return _sink("dead_letters", DEAD_LETTER_COLUMNS, metrics, **kw)


ROW_BUILDERS: dict[str, Callable[[Any], tuple[Any, ...]]] = {
    "labels": label_row,
    "alerts": alert_row,
    "dead_letters": dead_letter_row,
}

__all__ = ["ClickHouseSink", "alerts_sink", "dead_letters_sink", "labels_sink"]
