"""The pipeline's stages as plain async methods, and the Faust agents that drive them.

Data flow (all topics raw bytes, all outputs pydantic JSON)::

    news/chat topics --classify--> predictions --store--> ClickHouse labels
                          |              '-----surge----> alerts --store--> ClickHouse alerts
                          '--bad input--> deadletter --store--> ClickHouse dead_letters
    feedback topic: validated, joined and drift-watched by streams.learning (registered by build_pipeline)

Offsets and delivery: Faust's acks alone are not enough - it acks messages it skipped during a
rebalance or table recovery, and its gap check lets an early commit jump over events still in
flight (how SIGKILLed workers lost events; see ``driftline.streams.offsets``). So every agent here reports to
the ``CommitGate``: an ack of a gated topic's message only counts once the agent marked that message
*done*. The classify body registers its batch as in flight (``gate.begin``: nothing at or after it is
committable), awaits the Kafka acks of every prediction and dead letter it sends, and only then marks
the batch done; the take's ack (when the next batch is requested) then makes the offsets
committable. If inference or a send fails or the task is cancelled, the batch is abandoned, never
done: its offsets stay uncommitted and Kafka redelivers it. The store bodies *pin* each message
(``message.incref()``) before handing rows to a ``BatchingSink``; the take's own ack then only drops
the extra reference, and the sink's ``on_stored`` callback marks the messages done and drops the last
one after the insert succeeded - only then is the offset committable (flush -> done -> ack ->
commit). If the process dies in between, nothing was committed and Kafka redelivers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from driftline.models.inference.base import InferenceClient, ModelNotReadyError, Prediction
from driftline.schema.records import AlertRecord, DeadLetterRecord, PredictionRecord
from driftline.settings import PipelineConfig
from driftline.streams.alerts import SurgeMonitor, subject_of
from driftline.streams.deadletter import dead_letter
from driftline.streams.decode import Rejection, decode_event
from driftline.streams.metrics import PipelineMetrics
from driftline.streams.offsets import CommitGate
from driftline.streams.routing import Route
from driftline.streams.sinks.base import BatchingSink
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
    predictions: list[PredictionRecord] = field(default_factory=list)
    dead_letters: list[DeadLetterRecord] = field(default_factory=list)


@dataclass
class Health:
    inference_error: str | None = None
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
                rejection = Rejection("inference_failed", str(outcome)[:500], type(outcome).__name__)
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
        """Classify with retries; a batch that fails while the model is ready is split per event.

        Service trouble (model not loaded, Triton down: ``is_ready`` false) is waited out with
        backoff - valid events must not be dead-lettered because Triton restarts. A failure while the
        model *is* ready is blamed on the input: the batch is retried one event at a time and only the
        events that still fail come back as exceptions (then dead-lettered by the caller).
        """
        delay = self.config.inference_backoff_s
        while True:
            started = time.perf_counter()
            try:
                predictions = await self.client.predict(task, texts)
            except ModelNotReadyError as exc:
                error: BaseException = exc
                input_problem = False
            except Exception as exc:
                error = exc
                input_problem = await self._ready(task)
            else:
                self.health.inference_error = None
                self.metrics.batch_size.labels(task).observe(len(texts))
                self.metrics.inference_latency.labels(task).observe(time.perf_counter() - started)
                return list(predictions)
            if input_problem:
                if len(texts) == 1:
                    return [error]
                outcomes: list[Prediction | BaseException] = []
                for text in texts:
                    outcomes.extend(await self.predict(task, [text]))
                return outcomes
            self.health.inference_error = f"{type(error).__name__}: {error}"[:500]
            self.metrics.inference_retries.labels(task).inc()
            log.warning(
                "inference unavailable, retrying",
                extra={
                    "task": task,
                    "batch": len(texts),
                    "error": self.health.inference_error,
                    "retry_in_s": delay,
                },
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.inference_backoff_max_s)

    async def _ready(self, task: str) -> bool:
        try:
            return await self.client.is_ready(task)
        except Exception:
            return False


def _raw(event: Any) -> RawMessage:
    m = event.message
    return RawMessage(
        topic=m.topic, partition=m.partition, offset=m.offset, value=m.value, timestamp=m.timestamp
    )


def _pin(events: Sequence[Any], on_release: Any = None, gate: CommitGate | None = None):
    """Hold the messages' offsets until the returned callback runs (see module docstring).

    ``gate``: the app's commit gate, told the messages are done before they are acked (needed for
    gated topics, which every topic the pipeline's agents consume is).
    """
    for event in events:
        # the take's own ack then only drops this extra reference
        event.message.incref()

    def release() -> None:
        if gate is not None:
            gate.done(e.message for e in events)
        for event in events:
            event.ack()
        if on_release is not None:
            on_release()

    return release


def register_agents(
    app: Any,
    *,
    config: PipelineConfig,
    routes: list[Route],
    topics: PipelineTopics,
    stages: Stages,
    sinks: dict[str, BatchingSink],
    surge: SurgeMonitor,
    gate: CommitGate | None = None,
) -> None:
    """Attach the pipeline's agents and timers to ``app``.

    ``gate`` must be the one installed on ``app``'s consumer (``driftline.streams.offsets.install``);
    a fresh one (no topics gated) only suits apps whose offsets nobody relies on.
    """
    metrics = stages.metrics
    gate = gate if gate is not None else CommitGate()

    async def publish(result: ClassifyResult) -> None:
        """Send every output and wait for Kafka's acks (``force``: never deferred to commit time)."""
        pending = []
        for record in result.predictions:
            pending.append(
                await topics.predictions.send(
                    key=f"{record.task}|{record.subject or record.channel}".encode(),
                    value=record.model_dump_json().encode(),
                    timestamp=record.event_ts_ms / 1000.0,
                    force=True,
                )
            )
        for letter in result.dead_letters:
            pending.append(
                await topics.deadletter.send(
                    key=f"{letter.topic}:{letter.partition}:{letter.offset}".encode(),
                    value=letter.model_dump_json().encode(),
                    force=True,
                )
            )
        await asyncio.gather(*pending)  # raises if a send failed: the batch is then not done
        if result.predictions:
            for hook in stages.prediction_hooks:
                await hook(result.predictions)

    for route in routes:

        async def classify(stream: Any, route: Route = route) -> None:
            async for events in stream.take_events(config.max_batch, within=config.batch_within_s):
                messages = [e.message for e in events]
                gate.begin(messages)
                try:
                    result = await stages.classify(route, [_raw(e) for e in events])
                    await publish(result)
                except BaseException:
                    # cancelled or failed before the outputs were acked: take_events still acks the
                    # batch on the way out, but the gate ignores acks of undone messages - the
                    # offsets stay uncommitted and the batch is redelivered, never lost
                    gate.abandon(messages)
                    raise
                gate.done(messages)

        app.agent(
            topics.inputs[route.topic],
            name=f"classify-{route.schema_kind}",
            concurrency=config.classify_concurrency,
        )(classify)

    def store_agent(name: str, sink: BatchingSink, model: type[BaseModel], to_row: Any) -> None:
        async def store(stream: Any) -> None:
            async for events in stream.take_events(config.sink_max_rows, within=config.batch_within_s):
                rows = []
                event_times: list[tuple[str, float]] = []
                for event in events:
                    try:
                        record = model.model_validate_json(event.message.value or b"")
                    except ValidationError as exc:
                        # written by a foreign producer: nothing to store; never loop it back
                        log.error(
                            "unreadable record skipped", extra={"sink": sink.name, "error": str(exc)[:300]}
                        )
                        continue
                    rows.append(to_row(record))
                    if isinstance(record, PredictionRecord):
                        event_times.append((record.task, record.event_ts_ms / 1000.0))

                def stored(event_times: list[tuple[str, float]] = event_times) -> None:
                    now = time.time()
                    for task, ts in event_times:
                        metrics.end_to_end.labels(task).observe(max(0.0, now - ts))

                await sink.add(rows, on_stored=_pin(events, stored, gate=gate))

        app.agent(getattr(topics, name), name=f"store-{name}")(store)

    store_agent("predictions", sinks["labels"], PredictionRecord, PredictionRecord.to_row)
    store_agent("alerts", sinks["alerts"], AlertRecord, AlertRecord.to_row)
    store_agent("deadletter", sinks["dead_letters"], DeadLetterRecord, DeadLetterRecord.to_row)

    async def watch(stream: Any) -> None:
        async for event in stream.events():
            try:
                record = PredictionRecord.model_validate_json(event.message.value or b"")
            except ValidationError:
                continue
            alert = surge.observe(record, record.event_kind, record.event_ts_ms / 1000.0)
            if alert is not None:
                metrics.alerts.labels(alert.kind).inc()
                log.warning(
                    "alert", extra={"kind": alert.kind, "subject": alert.subject, "alert": alert.message}
                )
                await topics.alerts.send(key=alert.alert_id.encode(), value=alert.model_dump_json().encode())

    app.agent(topics.predictions, name="surge-watch")(watch)

    @app.timer(interval=min(0.25, config.sink_max_age_s / 2))
    async def flush_sinks() -> None:
        for sink in sinks.values():
            await sink.tick()
