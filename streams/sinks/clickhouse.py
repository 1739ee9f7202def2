"""Batched ClickHouse sinks, one per record of ``driftline.schema.records`` (its ``TABLE`` and ``COLUMNS``).

Duplicates from redelivery collapse in the tables (ReplacingMergeTree), not by insert dedup; ``refusal``
separates rows refused for good from errors that retry forever.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from typing import Any

from clickhouse_driver import Client, errors

from driftline.clients import clickhouse_client
from driftline.schema.records import (
    AlertRecord,
    DeadLetterRecord,
    DriftEvent,
    ExplanationRecord,
    FeedbackRecord,
    LabelRequestRecord,
    PredictionRecord,
    ShadowRecord,
    TaskLabelRecord,
    insert_sql,
)
from driftline.settings import ClickHouseSettings, get_settings
from driftline.streams.metrics import PipelineMetrics
from driftline.streams.sinks.base import BatchingSink, StoreRefused

#: Server error codes that refuse the rows of an insert, not the query: the same rows fail every time.
PERMANENT_CODES: dict[int, str] = {
    6: "CANNOT_PARSE_TEXT",
    25: "CANNOT_PARSE_ESCAPE_SEQUENCE",
    26: "CANNOT_PARSE_QUOTED_STRING",
    27: "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
    38: "CANNOT_PARSE_DATE",
    41: "CANNOT_PARSE_DATETIME",
    53: "TYPE_MISMATCH",
    69: "ARGUMENT_OUT_OF_BOUND",
    70: "CANNOT_CONVERT_TYPE",
    72: "CANNOT_PARSE_NUMBER",
    117: "INCORRECT_DATA",
    128: "TOO_LARGE_ARRAY_SIZE",
    130: "CANNOT_READ_ARRAY_FROM_TEXT",
    131: "TOO_LARGE_STRING_SIZE",
    153: "ILLEGAL_DIVISION",  # a DEFAULT/MATERIALIZED or partition expression divided by zero
    190: "SIZES_OF_ARRAYS_DONT_MATCH",  # Nested columns of unequal length
    252: "TOO_MANY_PARTS",  # only "Too many partitions for single INSERT block" (see refusal)
    321: "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
    349: "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN",
    376: "CANNOT_PARSE_UUID",
    395: "FUNCTION_THROW_IF_VALUE_IS_NON_ZERO",  # throwIf() in a column expression: a data check
    407: "DECIMAL_OVERFLOW",
    467: "CANNOT_PARSE_BOOL",
    469: "VIOLATED_CONSTRAINT",  # CHECK constraints (modern servers)
    691: "UNKNOWN_ELEMENT_OF_ENUM",
}

#: TOO_MANY_PARTS (252) also means "too many active parts, merges are behind": transient, retried.
_TOO_MANY_PARTITIONS = "too many partitions for single insert block"

#: Raised by clickhouse-driver while encoding a value for its column, before the block is sent
#: (``types_check=False``: a bad value surfaces as whatever the encoder trips on).
ENCODING_ERRORS: tuple[type[BaseException], ...] = (
    errors.TypeMismatchError,  # out of range for the column type, not a number
    errors.TooLargeStringSize,  # longer than a FixedString
    errors.CannotParseUuidError,
    errors.CannotParseDomainError,  # IPv4/IPv6
    errors.LogicalError,  # unknown Enum element
)
#: Python errors the encoder raises for a value of the wrong type (None, int for String, ...); they
#: count as refusals only when raised inside the driver's column encoders or block writer.
_PY_ENCODING_ERRORS = (TypeError, ValueError, AttributeError, KeyError, OverflowError, struct.error)
_ENCODER_MODULES = ("clickhouse_driver/columns/", "clickhouse_driver/streams/native")


def _from_encoder(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        if any(module in filename for module in _ENCODER_MODULES):
            return True
        tb = tb.tb_next
    return False


def _server_message(exc: errors.ServerException) -> str:
    """The server's message without the stack trace old servers append."""
    text = (exc.message or "").split("Stack trace:", 1)[0].strip()
    return text.removeprefix("DB::Exception: ").strip()


def refusal(exc: BaseException) -> StoreRefused | None:
    """``StoreRefused`` if ClickHouse refuses these rows for good; None when a retry may succeed."""
    if isinstance(exc, errors.ServerException):
        name = PERMANENT_CODES.get(exc.code or 0)
        message = _server_message(exc)
        if name is None or (name == "TOO_MANY_PARTS" and _TOO_MANY_PARTITIONS not in message.lower()):
            return None
        return StoreRefused(f"{name} (code {exc.code}): {message}"[:2000], name)
    if isinstance(exc, ENCODING_ERRORS) or (isinstance(exc, _PY_ENCODING_ERRORS) and _from_encoder(exc)):
        return StoreRefused(
            f"client could not encode the row: {type(exc).__name__}: {exc}"[:2000], type(exc).__name__
        )
    return None


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
        except Exception as exc:
            client.disconnect()  # a half-broken connection must not be reused by the retry
            self._client = None
            refused = refusal(exc)
            if refused is not None:
                raise refused from exc
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


def explanations_sink(metrics: PipelineMetrics | None = None, **kw: Any) -> ClickHouseSink:
    """Sink for ``ExplanationRecord.to_row()`` rows (the explainer service)."""
    return _sink(ExplanationRecord, metrics, **kw)


def label_requests_sink(metrics: PipelineMetrics | None = None, **kw: Any) -> ClickHouseSink:
    """Sink for ``LabelRequestRecord.to_row()`` rows (the workers' label requests)."""
    return _sink(LabelRequestRecord, metrics, **kw)


def shadow_predictions_sink(metrics: PipelineMetrics | None = None, **kw: Any) -> ClickHouseSink:
    """Sink for ``ShadowRecord.to_row()`` rows (what a shadow version answered for mirrored events)."""
    return _sink(ShadowRecord, metrics, **kw)


def task_labels_sink(metrics: PipelineMetrics | None = None, **kw: Any) -> ClickHouseSink:
    """Sink for ``TaskLabelRecord.to_row()`` rows (labels proposed or accepted by the workers)."""
    return _sink(TaskLabelRecord, metrics, **kw)


__all__ = [
    "PERMANENT_CODES",
    "ClickHouseSink",
    "alerts_sink",
    "dead_letters_sink",
    "drift_events_sink",
    "explanations_sink",
    "feedback_sink",
    "label_requests_sink",
    "labels_sink",
    "refusal",
    "shadow_predictions_sink",
    "task_labels_sink",
]
