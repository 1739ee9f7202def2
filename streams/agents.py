"""The pipeline's stages as plain async methods, and the Faust agents that drive them, one class each.

Data flow (all topics raw bytes, all outputs pydantic JSON)::

    news/chat topics --classify--> predictions --store--> ClickHouse labels
                          |              '-----surge----> alerts --store--> ClickHouse alerts
                          '--bad input--> deadletter --store--> ClickHouse dead_letters
    a labels/alerts row ClickHouse refuses for good --store_rejected--> deadletter (StoreRejected)
    feedback topic: validated, joined and drift-watched by streams.learning (registered by build_pipeline)

Every agent reports to the worker's ``Checkpoint`` (``driftline.streams.checkpoint``): classify
marks a batch done once its predictions and dead letters were acked by Kafka, the store agents once
their rows are in ClickHouse, so no input offset is committed before its outputs are durable.

Inference failures are sorted by who is at fault (``Stages.predict``):

- *the service* - model not loaded (``ModelNotReadyError``), server busy, slow or away
  (``InferenceOverloadedError``: deadline exceeded, unavailable, resource exhausted, client timeout),
  or any error while the model is not ready. This is backpressure: the classify agent retries the
  same batch forever with capped exponential backoff and takes no more input meanwhile; the batch is
  never done, so nothing at or after it commits. The pause reaches Kafka through Faust's bounded
  stream buffer: while the agent waits its buffer fills (``stream_buffer_maxsize``), and a full
  buffer takes the partition out of the fetch set until the agent drains it again
  (``driftline.streams.app``). ``/health`` says "overloaded, backing off" and the
  ``driftline_inference_backpressure`` gauge is 1 meanwhile.
- *the input* - an error from a ready model. The batch is retried one event at a time, each event
  up to ``inference_event_attempts`` times (overload during those attempts is backpressure again,
  not an attempt); only an event that keeps failing is dead-lettered, as ``inference_rejected``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from faust.exceptions import PartitionsMismatch
from pydantic import BaseModel, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
    wait_fixed,
)

from driftline.models.inference.base import (
    InferenceClient,
    InferenceOverloadedError,
    ModelNotReadyError,
    Prediction,
)
from driftline.schema.records import AlertRecord, DeadLetterRecord, PredictionRecord
from driftline.settings import PipelineConfig
from driftline.streams.alerts import SurgeMonitor, prediction_key, subject_of
from driftline.streams.checkpoint import Checkpoint
from driftline.streams.deadletter import dead_letter
from driftline.streams.decode import Rejection, decode_event
from driftline.streams.faust_compat import verify_table_partitions
from driftline.streams.metrics import PipelineMetrics
from driftline.streams.routing import Route
from driftline.streams.sinks.base import BatchingSink, RejectedRow
from driftline.streams.topics import PipelineTopics

log = logging.getLogger(__name__)


@dataclass
class RawMessage:
    """The parts of a Kafka message the stages need (decoupled from Faust for unit tests)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp: float | None = None


@dataclass
class ClassifyResult:
    """A classified batch: predictions to publish and dead letters to send."""

    predictions: list[PredictionRecord] = field(default_factory=list)
    dead_letters: list[DeadLetterRecord] = field(default_factory=list)


#: Errors that say the inference service cannot take the call now; never the input's fault.
BACKPRESSURE = (ModelNotReadyError, InferenceOverloadedError, TimeoutError)
OVERLOADED = "overloaded, backing off"
UNAVAILABLE = "unavailable, backing off"


@dataclass
class Backoff:
    """A task whose inference is being retried: why, since when, the last error."""

    state: str
    error: str
    since: float
    retries: int = 0


@dataclass
class Health:
    """Inference state for ``/health``: the tasks backing off now, and the last inference error."""

    inference_error: str | None = None
    backing_off: dict[str, Backoff] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)


class Stages:
    """Pure-ish processing stages; Faust-free so they can be tested with a fake client."""

    def __init__(self, config: PipelineConfig, client: InferenceClient, metrics: PipelineMetrics) -> None:
        self.config = config
        self.client = client
        self.metrics = metrics
        self.health = Health()
        # called with each batch's predictions once they are published (streams.learning: feedback
        # join memory, drift monitors); a hook that raises holds the batch back like a failed send
        self.prediction_hooks: list[Callable[[list[PredictionRecord]], Awaitable[None]]] = []

    def reject(self, msg: RawMessage, rejection: Rejection) -> DeadLetterRecord:
        """Dead-letter one message (counted and logged)."""
        self.metrics.dead_letters.labels(msg.topic, rejection.code).inc()
        log.info(
            "dead letter",
            extra={"topic": msg.topic, "partition": msg.partition, "offset": msg.offset,
                   "code": rejection.code, "detail": rejection.detail[:300]},
        )  # fmt: skip
        return dead_letter(
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            payload=msg.value,
            rejection=rejection,
            max_payload_bytes=self.config.deadletter_payload_bytes,
        )

    async def classify(self, route: Route, messages: Sequence[RawMessage]) -> ClassifyResult:
        """Decode, classify and turn a batch into prediction records and dead letters."""
        result = ClassifyResult()
        good: list[tuple[RawMessage, Any]] = []
        for msg in messages:
            self.metrics.events_in.labels(msg.topic).inc()
            try:
                event = decode_event(
                    msg.value,
                    route.schema_kind,
                    max_bytes=self.config.max_event_bytes,
                    max_text_chars=self.config.max_text_chars,
                )
            except Rejection as rejection:
                result.dead_letters.append(self.reject(msg, rejection))
                continue
            good.append((msg, event))
        if not good:
            return result
        outcomes = await self.predict(route.model_name, [event.text for _, event in good])
        processed_ms = int(time.time() * 1000)
        for (msg, event), outcome in zip(good, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                rejection = Rejection("inference_rejected", str(outcome)[:500], type(outcome).__name__)
                result.dead_letters.append(self.reject(msg, rejection))
                continue
            result.predictions.append(self._record(route, msg, event, outcome, processed_ms))
        self.metrics.events_ok.labels(route.task).inc(len(result.predictions))
        return result

    def _record(self, route: Route, msg: RawMessage, event: Any, p: Prediction, processed_ms: int):
        label_names = list(p.probabilities)
        return PredictionRecord(
            event_id=event.id,
            task=route.task,
            event_kind=route.schema_kind,
            subject=subject_of(route.schema_kind, p.label, event.channel, self.config.surge),
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            event_ts_ms=event.ts_ms(),
            processed_ts_ms=processed_ms,
            text=event.text,
            source=event.source,
            channel=event.channel,
            language=event.language or "",
            label=p.label,
            confidence=p.confidence,
            label_names=label_names,
            probabilities=[p.probabilities[n] for n in label_names],
            explanation=[(str(t), float(s)) for t, s in p.explanation],
            model_name=p.model_name,
            model_version=str(p.model_version),
            adapter_hash=p.adapter_hash,
            truncated=p.truncated,
            latency_ms=p.latency_ms,
        )

    async def predict(self, task: str, texts: list[str]) -> list[Prediction | BaseException]:
        """One prediction per text, or the error of an event the ready model keeps refusing.

        Service trouble is waited out (``_served``); a batch the ready model refuses is retried one
        event at a time (``_predict_one``), so only the events that fail on their own come back as
        exceptions (dead-lettered by the caller as ``inference_rejected``).
        """
        if len(texts) == 1:
            return [await self._predict_one(task, texts[0])]
        outcome = await self._served(task, texts)
        if not isinstance(outcome, BaseException):
            return outcome
        log.warning(
            "batch refused by a ready model, retrying event by event",
            extra={"task": task, "batch": len(texts), "error": f"{type(outcome).__name__}: {outcome}"[:500]},
        )
        return [await self._predict_one(task, text) for text in texts]

    async def _predict_one(self, task: str, text: str) -> Prediction | BaseException:
        """One event, tried up to ``inference_event_attempts`` times on a ready model; else its last error."""
        attempts = self.config.inference_event_attempts
        for attempt in range(1, attempts + 1):
            outcome = await self._served(task, [text])
            if not isinstance(outcome, BaseException):
                return outcome[0]
            if attempt == attempts:
                break
            delay = self._delay(attempt)
            self.metrics.inference_retries.labels(task, "rejected").inc()
            log.warning(
                "event refused by a ready model, retrying it",
                extra={"task": task, "attempt": attempt, "of": attempts, "retry_in_s": delay,
                       "error": f"{type(outcome).__name__}: {outcome}"[:500]},
            )  # fmt: skip
            await asyncio.sleep(delay)
        return outcome

    def _delay(self, attempt: int) -> float:
        """Backoff before retry ``attempt`` (1-based): doubles from ``inference_backoff_s``, capped."""
        base, cap = self.config.inference_backoff_s, self.config.inference_backoff_max_s
        return min(cap, base * 2 ** min(attempt - 1, 32))

    async def _served(self, task: str, texts: list[str]) -> list[Prediction] | Exception:
        """One call, retried forever while the service cannot take it (backpressure); the
        predictions, or the error of a call the ready model answered with a failure."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Exception),  # never CancelledError
            wait=wait_exponential(
                multiplier=self.config.inference_backoff_s, max=self.config.inference_backoff_max_s
            ),
            before_sleep=self._backing_off,
            reraise=True,
        )
        try:
            return await retrying(self._attempt, task, texts)
        finally:
            self._recovered(task)

    async def _attempt(self, task: str, texts: list[str]) -> list[Prediction] | Exception:
        """One inference call: its predictions, or its error when the model is ready (the input may be
        at fault); raises when the service cannot take it (retried by ``_served``)."""
        started = time.perf_counter()
        try:
            predictions = await self.client.predict(task, texts)
        except BACKPRESSURE:
            raise
        except Exception as exc:
            if await self._ready(task):
                self.health.inference_error = f"{type(exc).__name__}: {exc}"[:500]
                return exc
            raise
        self.health.inference_error = None
        self.metrics.batch_size.labels(task).observe(len(texts))
        self.metrics.inference_latency.labels(task).observe(time.perf_counter() - started)
        return list(predictions)

    def _backing_off(self, state: RetryCallState) -> None:
        """Before each backoff sleep: record the state for /health, count, gauge and log the retry."""
        task, texts = state.args
        error = state.outcome.exception() if state.outcome else None
        overloaded = isinstance(error, (InferenceOverloadedError, TimeoutError))
        cause, label = ("overloaded", OVERLOADED) if overloaded else ("unavailable", UNAVAILABLE)
        described = f"{type(error).__name__}: {error}"[:500]
        self.health.inference_error = described
        backoff = self.health.backing_off.setdefault(task, Backoff(label, described, time.time()))
        backoff.state, backoff.error = label, described
        backoff.retries += 1
        self.metrics.inference_retries.labels(task, cause).inc()
        self.metrics.inference_backpressure.labels(task).set(1)
        log.warning(
            "inference backing off",
            extra={
                "task": task,
                "state": label,
                "batch": len(texts),
                "error": described,
                "retry_in_s": state.next_action.sleep if state.next_action else None,
            },
        )

    def _recovered(self, task: str) -> None:
        """The service answered (or the wait was cancelled): the task is no longer backing off."""
        if self.health.backing_off.pop(task, None) is not None:
            self.metrics.inference_backpressure.labels(task).set(0)
            log.info("inference answering again", extra={"task": task})

    async def _ready(self, task: str) -> bool:
        try:
            return await self.client.is_ready(task)
        except Exception:
            return False


def raw_message(event: Any) -> RawMessage:
    """The stage-facing view of a Faust event's message."""
    m = event.message
    return RawMessage(
        topic=m.topic, partition=m.partition, offset=m.offset, value=m.value, timestamp=m.timestamp
    )


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
        consumer metadata can lag behind the changelog topics created at start-up)."""
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
