"""Rows the store refuses for good: bisected out of their batch, handed over, offsets released after.

Fakes only (no Kafka/ClickHouse): a writer that refuses batches containing given rows and fails
transiently first, ``refusal``'s classification of clickhouse-driver errors, and the worker wiring
(``StoreAgent`` + ``StoreRejected``). ``test_sink_stack.py`` provokes real refusals on the server.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from clickhouse_driver import errors
from pydantic import BaseModel

from driftline.settings import PipelineConfig
from driftline.streams.agents import StoreAgent, StoreRejected
from driftline.streams.checkpoint import Checkpoint
from driftline.streams.metrics import PipelineMetrics
from driftline.streams.sinks.base import BatchingSink, RejectedRow, StoreRefused
from driftline.streams.sinks.clickhouse import PERMANENT_CODES, refusal
from driftline.streams.stages import RawMessage, Stages
from tests.streams.test_agents import FakeEvent, FakeMessage, FakeTopics


class PickySink(BatchingSink[int]):
    """Fails the first ``transient`` writes, refuses any batch holding a row of ``bad``, else stores."""

    name = "picky"

    def __init__(self, bad: set[int], transient: int = 0, every_other: bool = False, **kw: Any) -> None:
        kw.setdefault("metrics", PipelineMetrics())
        super().__init__(max_rows=1000, max_age_s=60, backoff_s=0.001, backoff_max_s=0.002, **kw)
        self.bad, self.transient, self.every_other = bad, transient, every_other
        self.stored: list[int] = []
        self.writes = 0

    async def _write(self, rows: list[int]) -> None:
        self.writes += 1
        if self.transient or (self.every_other and self.writes % 2):
            self.transient = max(0, self.transient - 1)
            raise ConnectionError("clickhouse down")
        refused = sorted(self.bad.intersection(rows))
        if refused:
            raise StoreRefused(f"cannot parse value {refused[0]}", "CANNOT_PARSE_TEXT")
        self.stored.extend(rows)


def _counter(metrics: PipelineMetrics | None, name: str, sink: str) -> float:
    assert metrics is not None
    return getattr(metrics, name).labels(sink)._value.get()


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


# --- which ClickHouse errors are refusals ---------------------------------------------------------


def _server(code: int, message: str) -> errors.ServerException:
    return errors.ServerException(f"DB::Exception: {message}. Stack trace:\n\n0. frames", code)


@pytest.mark.parametrize(
    ("exc", "permanent"),
    [
        (_server(38, "Cannot parse date: value is too short"), "CANNOT_PARSE_DATE"),
        (_server(252, "Too many partitions for single INSERT block (more than 100)"), "TOO_MANY_PARTS"),
        (_server(252, "Too many parts (300). Merges are processing significantly slower"), None),
        (_server(241, "Memory limit (total) exceeded"), None),
        (_server(60, "Table driftline.labels doesn't exist"), None),  # the query, not the rows
        (_server(16, "No such column nope in table labels"), None),
        (_server(159, "Timeout exceeded"), None),
        (errors.NetworkError("Code: 210. Connection refused"), None),
        (errors.SocketTimeoutError("timed out"), None),
        (ConnectionResetError("reset by peer"), None),
        (EOFError("Unexpected EOF while reading bytes"), None),
        (errors.TypeMismatchError("Column id: argument out of range"), "TypeMismatchError"),
        (ValueError("not raised by the driver's encoder"), None),
    ],
)
def test_refusal_classifies_clickhouse_errors(exc: BaseException, permanent: str | None) -> None:
    refused = refusal(exc)
    assert (refused.error_type if refused else None) == permanent
    if refused is not None and isinstance(exc, errors.ServerException):
        assert (
            refused.reason.startswith(f"{permanent} (code {exc.code}): ")
            and "Stack trace" not in refused.reason
        )


def test_permanent_codes_carry_clickhouse_s_own_names() -> None:
    session = pytest.importorskip("chdb.session")
    sess = session.Session()
    try:
        codes = ", ".join(str(code) for code in PERMANENT_CODES)
        result = str(
            sess.query(f"SELECT c, errorCodeToName(c) FROM (SELECT arrayJoin([{codes}]) AS c)", "JSON")
        )
    finally:
        sess.close()
    names = {row["c"]: row["errorCodeToName(c)"] for row in json.loads(result)["data"]}
    assert names == PERMANENT_CODES


# --- worker wiring: StoreAgent + StoreRejected --------------------------------------------------


class Item(BaseModel):
    id: int


async def test_store_agent_dead_letters_refused_rows_and_releases_offsets_after_the_ack() -> None:
    topics, checkpoint = FakeTopics(fail=True), Checkpoint(["t"])
    stages = Stages(PipelineConfig(), client=None, metrics=PipelineMetrics())  # type: ignore[arg-type]
    sink = PickySink(bad={2}, rejected=StoreRejected(stages, topics))  # type: ignore[arg-type]
    agent = StoreAgent(
        sink, Item, lambda r: r.id, config=PipelineConfig(), metrics=stages.metrics, checkpoint=checkpoint
    )
    values = [json.dumps({"id": i}).encode() for i in range(4)]
    events = [FakeEvent(FakeMessage(offset, value)) for offset, value in enumerate(values)]
    await agent.process(events)
    flush = asyncio.create_task(sink.flush())
    await asyncio.sleep(0.05)  # the dead letter's send keeps failing: nothing released yet
    assert not flush.done() and all(e.acks == 0 for e in events) and sink.stored == [0, 1, 3]
    topics.deadletter.fail = False
    await flush
    letter = json.loads(topics.deadletter.sent[-1]["value"])
    assert topics.deadletter.sent[-1]["key"] == b"t:0:2"
    assert (letter["code"], letter["topic"], letter["partition"], letter["offset"]) == (
        "store_rejected",
        "t",
        0,
        2,
    )
    assert letter["reason"] == "store_rejected: ClickHouse picky refused the row: cannot parse value 2"
    assert (
        letter["error_type"] == "CANNOT_PARSE_TEXT" and base64.b64decode(letter["payload_b64"]) == values[2]
    )
    assert all(e.acks == 1 for e in events) and all(checkpoint._gate.is_done(e.message) for e in events)
    assert stages.metrics.dead_letters.labels("t", "store_rejected")._value.get() >= 1


async def test_store_rejected_skips_rows_without_a_source_message() -> None:
    topics = FakeTopics()
    stages = Stages(PipelineConfig(), client=None, metrics=PipelineMetrics())  # type: ignore[arg-type]
    handler = StoreRejected(stages, topics)  # type: ignore[arg-type]
    msg = RawMessage(topic="feedback", partition=1, offset=9, value=b"{}")
    await handler([RejectedRow("s", 1, None, "r", "E"), RejectedRow("s", 2, msg, "r", "E")])
    assert [s["key"] for s in topics.deadletter.sent] == [b"feedback:1:9"]
