"""Batched ClickHouse sinks, one per record of ``driftline.schema.records`` (its ``TABLE`` and ``COLUMNS``).

Rows are the records' own ``to_row()`` tuples, so a table's columns are declared once, on its record.

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
from collections.abc import Sequence
from typing import Any

from clickhouse_driver import Client

from driftline.clients import clickhouse_client
from driftline.schema.records import (
    AlertRecord,
    DeadLetterRecord,
    DriftEvent,
    FeedbackRecord,
    PredictionRecord,
    insert_sql,
)
from driftline.settings import ClickHouseSettings, get_settings
from driftline.streams.metrics import PipelineMetrics
from driftline.streams.sinks.base import BatchingSink


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
        self._sql = insert_sql(table, self.columns)

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


def _sink(record: Any, metrics: PipelineMetrics | None, **kw: Any) -> ClickHouseSink:
    return ClickHouseSink(record.TABLE, record.COLUMNS, metrics=metrics, **kw)


def labels_sink(metrics: PipelineMetrics | None = None, **kw: Any) -> ClickHouseSink:
    """Sink for ``PredictionRecord.to_row()`` rows."""
    return _sink(PredictionRecord, metrics, **kw)


def alerts_sink(metrics: PipelineMetrics | None = None, **kw: Any) -> ClickHouseSink:
    """Sink for ``AlertRecord.to_row()`` rows."""
    return _sink(AlertRecord, metrics, **kw)


def dead_letters_sink(metrics: PipelineMetrics | None = None, **kw: Any) -> ClickHouseSink:
    """Sink for ``DeadLetterRecord.to_row()`` rows."""
    return _sink(DeadLetterRecord, metrics, **kw)


def feedback_sink(metrics: PipelineMetrics | None = None, **kw: Any) -> ClickHouseSink:
    """Sink for ``FeedbackRecord.to_row()`` rows."""
    return _sink(FeedbackRecord, metrics, **kw)


def drift_events_sink(metrics: PipelineMetrics | None = None, **kw: Any) -> ClickHouseSink:
    """Sink for ``DriftEvent.to_row()`` rows."""
    return _sink(DriftEvent, metrics, **kw)


__all__ = [
    "ClickHouseSink",
    "alerts_sink",
    "dead_letters_sink",
    "drift_events_sink",
    "feedback_sink",
    "labels_sink",
]
