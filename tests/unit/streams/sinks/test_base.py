"""``BatchingSink`` (streams.sinks.base) with fakes: refused rows are bisected out of their batch and
handed over, offsets released after; flushing on size and time.

Fakes only (no Kafka/ClickHouse): a writer that refuses batches containing given rows and fails
transiently first. tests/stack/streams/test_sink.py provokes real refusals on the server.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from driftline.streams.metrics import PipelineMetrics
from driftline.streams.sinks.base import BatchingSink, RejectedRow, StoreRefused
from tests.support.sinks import PickySink


def _counter(metrics: PipelineMetrics | None, name: str, sink: str) -> float:
    assert metrics is not None
    return getattr(metrics, name).labels(sink)._value.get()


class FlakySink(BatchingSink[int]):
    """Fails the first ``failures`` writes, then stores (records) the rows."""

    name = "flaky"

    def __init__(self, failures: int, **kw: object) -> None:
        super().__init__(backoff_s=0.01, backoff_max_s=0.02, **kw)  # type: ignore[arg-type]
        self.failures = failures
        self.stored: list[list[int]] = []

    async def _write(self, rows: list[int]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("clickhouse down")
        self.stored.append(list(rows))


async def test_refused_rows_are_bisected_out_the_rest_stored_and_callbacks_run_once() -> None:
    handed: list[list[RejectedRow[Any]]] = []
    acked: list[str] = []
    sink = PickySink(bad={3, 11}, transient=3, rejected=lambda rows: handed.append(rows))
    rows = list(range(16))
    await sink.add(rows[:8], on_stored=lambda: acked.append("a"), origins=[f"m{i}" for i in rows[:8]])
    await sink.add(rows[8:], on_stored=lambda: acked.append("b"), origins=[f"m{i}" for i in rows[8:]])
    assert await sink.flush() == 16
    assert sorted(sink.stored) == [r for r in rows if r not in (3, 11)]
    (refused,) = handed  # one hand-over per flush, after every good row was stored
    assert [(r.row, r.origin, r.reason, r.error_type) for r in refused] == [
        (3, "m3", "cannot parse value 3", "CANNOT_PARSE_TEXT"),
        (11, "m11", "cannot parse value 11", "CANNOT_PARSE_TEXT"),
    ]
    assert acked == ["a", "b"] and sink.pending == 0 and sink.healthy
    assert sink.rejected_rows == 2 and _counter(sink.metrics, "sink_rejected", "picky") == 2
    assert _counter(sink.metrics, "sink_retries", "picky") == 3  # transient failures still retried
    assert await sink.flush() == 0 and acked == ["a", "b"]  # callbacks ran once


async def test_transient_errors_during_the_bisection_are_retried_too() -> None:
    sink = PickySink(bad={5}, every_other=True)  # every other write attempt fails transiently
    await sink.add(list(range(8)))
    await sink.flush()
    assert sorted(sink.stored) == [0, 1, 2, 3, 4, 6, 7] and sink.rejected_rows == 1
    assert _counter(sink.metrics, "sink_retries", "picky") > 0


async def test_a_batch_refused_as_a_whole_is_stored_in_halves() -> None:
    """Like modern ClickHouse's limit of partitions per insert block: no row is bad on its own."""

    class PartitionLimit(PickySink):
        async def _write(self, rows: list[int]) -> None:
            if len(rows) > 4:
                raise StoreRefused(
                    "Too many partitions for single INSERT block (more than 4)", "TOO_MANY_PARTS"
                )
            self.stored.extend(rows)

    handed: list[Any] = []
    sink = PartitionLimit(bad=set(), rejected=handed.append)
    await sink.add(list(range(10)))
    await sink.flush()
    assert sorted(sink.stored) == list(range(10)) and handed == [] and sink.rejected_rows == 0


async def test_callbacks_wait_for_the_handler_which_is_retried_until_it_succeeds() -> None:
    acked: list[str] = []
    attempts: list[int] = []

    async def handler(rows: list[RejectedRow[Any]]) -> None:
        attempts.append(len(rows))
        assert acked == []  # offsets are still held while dead letters are produced
        if len(attempts) < 3:
            raise RuntimeError("broker gone")

    sink = PickySink(bad={1}, rejected=handler)
    await sink.add([0, 1, 2], on_stored=lambda: acked.append("x"))
    await sink.flush()
    assert attempts == [1, 1, 1] and acked == ["x"] and sink.healthy


async def test_cancelled_hand_over_keeps_rows_and_callbacks() -> None:
    acked: list[str] = []
    started = asyncio.Event()

    async def stuck(rows: list[RejectedRow[Any]]) -> None:
        started.set()
        await asyncio.Event().wait()

    sink = PickySink(bad={1}, rejected=stuck)
    await sink.add([0, 1], on_stored=lambda: acked.append("x"), origins=["m0", "m1"])
    task = asyncio.create_task(sink.flush())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert acked == [] and sink.pending == 2  # nothing released; stored rows are written again later
    sink.rejected = lambda rows: None
    await sink.flush()
    assert acked == ["x"] and sink.stored == [0, 0]


async def test_without_a_handler_refused_rows_are_logged_counted_and_released(
    caplog: pytest.LogCaptureFixture,
) -> None:
    acked: list[str] = []
    sink = PickySink(bad={2})
    await sink.add([1, 2], on_stored=lambda: acked.append("x"))
    with caplog.at_level("ERROR"):
        await sink.flush()
    assert sink.stored == [1] and acked == ["x"] and sink.rejected_rows == 1
    (record,) = [r for r in caplog.records if r.getMessage() == "row refused by the store"]
    assert record.row == "2" and "cannot parse value 2" in record.error  # type: ignore[attr-defined]


async def test_origins_must_match_rows() -> None:
    with pytest.raises(ValueError):
        await PickySink(bad=set()).add([1, 2], origins=["m1"])


async def test_sink_flushes_on_size_and_runs_callbacks_only_after_storing() -> None:
    sink = FlakySink(failures=3, max_rows=4, max_age_s=60, metrics=PipelineMetrics())
    acked: list[str] = []
    await sink.add([1, 2], on_stored=lambda: acked.append("a"))
    assert acked == [] and sink.pending == 2
    await sink.add([3, 4], on_stored=lambda: acked.append("b"))  # size bound: flush, retried 3 times
    assert sink.stored == [[1, 2, 3, 4]] and acked == ["a", "b"] and sink.healthy
    assert sink.metrics.sink_retries.labels("flaky")._value.get() == 3  # type: ignore[union-attr]


async def test_sink_time_bound_and_cancel_keeps_rows_unacked() -> None:
    sink = FlakySink(failures=10**6, max_rows=100, max_age_s=0.0)
    acked: list[str] = []
    await sink.add([1], on_stored=lambda: acked.append("x"))
    task = asyncio.create_task(sink.tick())  # time bound reached: flush starts, keeps failing
    await asyncio.sleep(0.1)
    assert not sink.healthy and "clickhouse down" in (sink.last_error or "")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert acked == [] and sink.pending == 1  # nothing acknowledged, rows kept for the next try
    sink.failures = 0
    await sink.flush()
    assert sink.stored == [[1]] and acked == ["x"]
