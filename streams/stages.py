"""The pipeline's processing stages as plain async methods, Faust-free so they test with a fake client.

``Stages.classify`` turns raw messages into predictions and dead letters; ``Stages.predict`` sorts inference
failures into backpressure (the service's fault) and dead letters (the input's).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
)

from driftline.models.inference.base import (
    InferenceClient,
    InferenceOverloadedError,
    ModelNotReadyError,
    Prediction,
)
from driftline.schema.records import DeadLetterRecord, PredictionRecord
from driftline.settings import PipelineConfig
from driftline.streams.decode import Rejection, dead_letter, decode_event
from driftline.streams.metrics import PipelineMetrics
from driftline.streams.routing import Route
from driftline.streams.surges import subject_of

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
            extra={
                "topic": msg.topic,
                "partition": msg.partition,
                "offset": msg.offset,
                "code": rejection.code,
                "detail": rejection.detail[:300],
            },
        )
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
            engine=p.engine,
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
        retrying = AsyncRetrying(
            retry=retry_if_result(lambda outcome: isinstance(outcome, BaseException)),
            stop=stop_after_attempt(self.config.inference_event_attempts),
            wait=wait_exponential(
                multiplier=self.config.inference_backoff_s, max=self.config.inference_backoff_max_s
            ),
            before_sleep=self._retrying_event,
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        )
        outcome = await retrying(self._served, task, [text])
        return outcome if isinstance(outcome, BaseException) else outcome[0]

    def _retrying_event(self, state: RetryCallState) -> None:
        """Before retrying an event a ready model refused: count and log it."""
        task = state.args[0]
        outcome = state.outcome.result() if state.outcome else None
        self.metrics.inference_retries.labels(task, "rejected").inc()
        log.warning(
            "event refused by a ready model, retrying it",
            extra={
                "task": task,
                "attempt": state.attempt_number,
                "of": self.config.inference_event_attempts,
                "retry_in_s": state.next_action.sleep if state.next_action else None,
                "error": f"{type(outcome).__name__}: {outcome}"[:500],
            },
        )

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
