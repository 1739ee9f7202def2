"""``ClickHouseSink`` against the real local ClickHouse: refusals it provokes, errors it retries.

The server (18.16) refuses a value a ``MATERIALIZED`` column cannot parse (``CANNOT_PARSE_DATE``);
clickhouse-driver refuses to encode a value that does not fit its column (``types_check=False`` as
the sink uses it). Both are bisected out, dead-lettered through the worker's wiring (``StoreAgent``
+ ``StoreRejected``; Kafka is faked), and the other rows stored. An unknown table is an error of
the query, not of the rows: retried until the table exists, nothing dead-lettered.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from driftline.apps.testing.harness import unique_suffix, wait_for
from driftline.settings import PipelineConfig, Settings
from driftline.streams.agents import StoreAgent, StoreRejected
from driftline.streams.checkpoint import Checkpoint
from driftline.streams.metrics import PipelineMetrics
from driftline.streams.sinks.clickhouse import ClickHouseSink
from driftline.streams.stages import Stages
from tests.unit.streams.test_agents import FakeEvent, FakeMessage, FakeTopics

pytestmark = pytest.mark.stack

BATCHING: dict[str, Any] = {"max_rows": 1000, "max_age_s": 60, "backoff_s": 0.05, "backoff_max_s": 0.2}


class Item(BaseModel):
    id: int
    day: str | None


@pytest.fixture
def table(ch: Any) -> Iterator[str]:
    name = unique_suffix("sink_refusal_")
    yield name
    ch.execute(f"DROP TABLE IF EXISTS {name}")


def _create(ch: Any, name: str) -> None:
    ch.execute(
        f"CREATE TABLE {name} (id Int64, small UInt8, day String, d Date MATERIALIZED toDate(day)) "
        "ENGINE = MergeTree ORDER BY id"
    )


async def test_refused_rows_are_dead_lettered_and_the_rest_stored(
    ch: Any, settings: Settings, table: str
) -> None:
    _create(ch, table)
    topics, checkpoint = FakeTopics(), Checkpoint(["t"])
    stages = Stages(PipelineConfig(), client=None, metrics=PipelineMetrics())  # type: ignore[arg-type]
    sink = ClickHouseSink(
        table, ("id", "small", "day"), settings=settings.clickhouse, metrics=stages.metrics,
        rejected=StoreRejected(stages, topics), **BATCHING,  # type: ignore[arg-type]
    )  # fmt: skip
    agent = StoreAgent(
        sink, Item, lambda r: (r.id, r.id, r.day), config=PipelineConfig(), metrics=stages.metrics,
        checkpoint=checkpoint,
    )  # fmt: skip
    items = [{"id": i, "day": "2024-05-01"} for i in range(12)]
    items[3]["day"] = "garbage"  # the server cannot parse it into the MATERIALIZED Date
    items[7]["id"] = 300  # does not fit UInt8: the driver cannot encode it
    items[9]["day"] = None  # None for a String column: the driver cannot encode it
    values = [json.dumps(item).encode() for item in items]
    events = [FakeEvent(FakeMessage(offset, value)) for offset, value in enumerate(values)]
    await agent.process(events)
    assert await sink.flush() == 12

    stored = [row[0] for row in ch.execute(f"SELECT id FROM {table} ORDER BY id")]
    assert stored == [0, 1, 2, 4, 5, 6, 8, 10, 11]
    letters = {json.loads(s["value"])["offset"]: json.loads(s["value"]) for s in topics.deadletter.sent}
    assert sorted(letters) == [3, 7, 9] and all(d["code"] == "store_rejected" for d in letters.values())
    assert letters[3]["error_type"] == "CANNOT_PARSE_DATE"
    assert letters[3]["reason"].startswith(
        f"store_rejected: ClickHouse {table} refused the row: CANNOT_PARSE_DATE (code 38): Cannot parse date"
    )
    assert "Stack trace" not in letters[3]["reason"]
    assert letters[7]["error_type"] == "TypeMismatchError" and "small" in letters[7]["reason"]
    assert letters[9]["error_type"] == "AttributeError"
    assert all(base64.b64decode(d["payload_b64"]) == values[o] for o, d in letters.items())
    assert all(e.acks == 1 for e in events) and all(checkpoint._gate.is_done(e.message) for e in events)
    assert sink.rejected_rows == 3 and sink.healthy
    assert stages.metrics.sink_rejected.labels(table)._value.get() == 3


async def test_unknown_table_is_retried_until_it_exists(ch: Any, settings: Settings, table: str) -> None:
    acked: list[str] = []
    sink = ClickHouseSink(table, ("id", "small", "day"), settings=settings.clickhouse, **BATCHING)
    await sink.add([(1, 1, "2024-05-01"), (2, 2, "2024-05-02")], on_stored=lambda: acked.append("x"))
    flush = asyncio.create_task(sink.flush())
    assert await asyncio.to_thread(wait_for, lambda: "Code: 60" in (sink.last_error or ""), 30, 0.1)
    assert not flush.done() and acked == [] and sink.rejected_rows == 0
    _create(ch, table)
    await asyncio.wait_for(flush, 30)
    assert ch.execute(f"SELECT id, d FROM {table} ORDER BY id")[0][0] == 1
    assert sink.stored_rows == 2 and sink.rejected_rows == 0 and acked == ["x"] and sink.healthy
