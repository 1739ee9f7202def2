"""The Faust agents that drive the pipeline's stages (``driftline.streams.stages``), one class each.

Each agent reports to the worker's ``Checkpoint``, so no input offset commits before its outputs are durable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from faust.exceptions import PartitionsMismatch
from pydantic import BaseModel, ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from driftline.schema.records import AlertRecord, DeadLetterRecord, PredictionRecord
from driftline.settings import PipelineConfig
from driftline.streams.checkpoint import Checkpoint
from driftline.streams.decode import Rejection
from driftline.streams.faust_compat import verify_table_partitions
from driftline.streams.metrics import PipelineMetrics
from driftline.streams.routing import Route
from driftline.streams.sinks.base import BatchingSink, RejectedRow
from driftline.streams.stages import ClassifyResult, RawMessage, Stages, raw_message
from driftline.streams.surges import SurgeMonitor, prediction_key
from driftline.streams.topics import PipelineTopics

log = logging.getLogger(__name__)


async def send_dead_letter(topics: PipelineTopics, letter: DeadLetterRecord) -> Awaitable[Any]:
    """Send a dead letter (``force``: never deferred); returns the future of Kafka's ack."""
    return await topics.deadletter.send(
        key=f"{letter.topic}:{letter.partition}:{letter.offset}".encode(),
        value=letter.model_dump_json().encode(),
        force=True,
    )


class StoreRejected:
    """A sink's ``rejected`` handler: the source message of each refused row is dead-lettered.

    The dead letter carries the source message's topic/partition/offset and its original value (the
    record as it was published), and the server's message as the detail; the call returns once Kafka
    acked every dead letter, so the sink releases the rows' offsets only after that. Rows without a
    source message (``origin`` not a ``RawMessage``) were logged and counted by the sink already.
    """

    code = "store_rejected"

    def __init__(self, stages: Stages, topics: PipelineTopics) -> None:
        self.stages = stages
        self.topics = topics

    async def __call__(self, refused: Sequence[RejectedRow[Any]]) -> None:
        """Send one dead letter per refused row that came from a message and wait for Kafka's acks."""
        pending = []
        for r in refused:
            if isinstance(r.origin, RawMessage):
                rejection = Rejection(
                    self.code, f"ClickHouse {r.sink} refused the row: {r.reason}", r.error_type
                )
                pending.append(await send_dead_letter(self.topics, self.stages.reject(r.origin, rejection)))
        await Checkpoint.produced(pending)


class ClassifyAgent:
    """Classifies one route's input batches and publishes predictions and dead letters."""

    def __init__(
        self,
        route: Route,
        *,
        config: PipelineConfig,
        stages: Stages,
        topics: PipelineTopics,
        checkpoint: Checkpoint,
    ) -> None:
        self.route = route
        self.config = config
        self.stages = stages
        self.topics = topics
        self.checkpoint = checkpoint

    @property
    def name(self) -> str:
        """The Faust agent's name."""
        return f"classify-{self.route.schema_kind}"

    async def publish(self, result: ClassifyResult) -> None:
        """Step 2: send every output and wait for Kafka's acks, then run the prediction hooks."""
        pending = []
        for record in result.predictions:
            pending.append(
                await self.topics.predictions.send(
                    key=prediction_key(record).encode(),  # co-partitions each surge share group
                    value=record.model_dump_json().encode(),
                    timestamp=record.event_ts_ms / 1000.0,
                    force=True,
                )
            )
        for letter in result.dead_letters:
            pending.append(await send_dead_letter(self.topics, letter))
        await self.checkpoint.produced(pending)  # raises if a send failed: the batch is then not done
        if result.predictions:
            for hook in self.stages.prediction_hooks:
                await hook(result.predictions)

    async def process(self, events: Sequence[Any]) -> None:
        """Classify and publish one batch; done only once its outputs are acked."""
        async with self.checkpoint.batch([e.message for e in events]):
            result = await self.stages.classify(self.route, [raw_message(e) for e in events])
            await self.publish(result)

    async def run(self, stream: Any) -> None:
        """The Faust agent body."""
        async for events in stream.take_events(self.config.max_batch, within=self.config.batch_within_s):
            await self.process(events)


class StoreAgent:
    """Stores one output topic's records in a ClickHouse sink; offsets commit once rows are stored."""

    def __init__(
        self,
        sink: BatchingSink,
        model: type[BaseModel],
        to_row: Callable[[Any], Any],
        *,
        config: PipelineConfig,
        metrics: PipelineMetrics,
        checkpoint: Checkpoint,
    ) -> None:
        self.sink = sink
        self.model = model
        self.to_row = to_row
        self.config = config
        self.metrics = metrics
        self.checkpoint = checkpoint

    def rows(
        self, messages: Sequence[RawMessage]
    ) -> tuple[list[Any], list[RawMessage], list[tuple[str, float]]]:
        """Rows for the sink, the message of each row, and (task, event time) of each prediction;
        unreadable records are skipped."""
        rows, origins = [], []
        event_times: list[tuple[str, float]] = []
        for msg in messages:
            try:
                record = self.model.model_validate_json(msg.value or b"")
            except ValidationError as exc:
                # written by a foreign producer: nothing to store; never loop it back
                log.error(
                    "unreadable record skipped", extra={"sink": self.sink.name, "error": str(exc)[:300]}
                )
                continue
            rows.append(self.to_row(record))
            origins.append(msg)
            if isinstance(record, PredictionRecord):
                event_times.append((record.task, record.event_ts_ms / 1000.0))
        return rows, origins, event_times

    def observe_stored(self, event_times: list[tuple[str, float]]) -> None:
        """End-to-end latency of stored predictions (event time to stored)."""
        now = time.time()
        for task, ts in event_times:
            self.metrics.end_to_end.labels(task).observe(max(0.0, now - ts))

    async def process(self, events: Sequence[Any]) -> None:
        """Hand one batch to the sink; the checkpoint releases its offsets after the insert (or, for a
        row ClickHouse refuses, after its dead letter is acked)."""
        rows, origins, event_times = self.rows([raw_message(e) for e in events])
        release = self.checkpoint.hold(events, lambda: self.observe_stored(event_times))
        await self.sink.add(rows, on_stored=release, origins=origins)

    async def run(self, stream: Any) -> None:
        """The Faust agent body."""
        async for events in stream.take_events(self.config.sink_max_rows, within=self.config.batch_within_s):
            await self.process(events)


class SurgeWatchAgent:
    """Feeds predictions to the surge monitor and publishes its alerts."""

    def __init__(self, surge: SurgeMonitor, *, topics: PipelineTopics, metrics: PipelineMetrics) -> None:
        self.surge = surge
        self.topics = topics
        self.metrics = metrics
        self._ready_topics: set[str] = set()

    def observe(self, value: bytes | None) -> AlertRecord | None:
        """The alert one prediction raises, if any (unreadable values are ignored)."""
        try:
            record = PredictionRecord.model_validate_json(value or b"")
        except ValidationError:
            return None
        alert = self.surge.observe(record, record.event_kind, record.event_ts_ms / 1000.0)
        if alert is not None:
            self.metrics.alerts.labels(alert.kind).inc()
            log.warning("alert", extra={"kind": alert.kind, "subject": alert.subject, "alert": alert.message})
        return alert

    async def ready(self, topic: str) -> None:
        """Wait until the surge tables' changelogs show ``topic``'s partitions (a fresh worker's
        consumer metadata can lag behind the changelog topics created at start-up); checked once
        per source topic."""
        if topic in self._ready_topics:
            return
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(PartitionsMismatch),
            wait=wait_fixed(0.5),
            stop=stop_after_delay(120),
            before_sleep=lambda state: log.warning(
                "surge tables waiting for changelog metadata", extra={"attempt": state.attempt_number}
            ),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                verify_table_partitions(self.surge.tables, topic)
        self._ready_topics.add(topic)

    async def run(self, stream: Any) -> None:
        """The Faust agent body."""
        async for event in stream.events():
            await self.ready(event.message.topic)
            alert = self.observe(event.message.value)
            if alert is not None:
                await self.topics.alerts.send(
                    key=alert.alert_id.encode(), value=alert.model_dump_json().encode()
                )


def register_agents(
    app: Any,
    *,
    config: PipelineConfig,
    routes: list[Route],
    topics: PipelineTopics,
    stages: Stages,
    sinks: dict[str, BatchingSink],
    surge: SurgeMonitor,
    checkpoint: Checkpoint,
) -> None:
    """Attach the pipeline's agents and the sink timer to ``app`` (``checkpoint`` installed on it)."""
    for route in routes:
        classify = ClassifyAgent(route, config=config, stages=stages, topics=topics, checkpoint=checkpoint)
        app.agent(topics.inputs[route.topic], name=classify.name, concurrency=config.classify_concurrency)(
            classify.run
        )
    stores = {
        "predictions": (sinks["labels"], PredictionRecord, PredictionRecord.to_row),
        "alerts": (sinks["alerts"], AlertRecord, AlertRecord.to_row),
        "deadletter": (sinks["dead_letters"], DeadLetterRecord, DeadLetterRecord.to_row),
    }
    for name, (sink, model, to_row) in stores.items():
        store = StoreAgent(sink, model, to_row, config=config, metrics=stages.metrics, checkpoint=checkpoint)
        app.agent(getattr(topics, name), name=f"store-{name}")(store.run)
    watch = SurgeWatchAgent(surge, topics=topics, metrics=stages.metrics)
    app.agent(topics.predictions, name="surge-watch")(watch.run)
    app.timer(interval=min(0.25, config.sink_max_age_s / 2), name="flush-sinks")(checkpoint.tick)
