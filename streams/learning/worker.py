"""The learning loop's Faust side: feedback agent, drift-watch agent, retry timer, ``/learning`` view.

``register_learning`` wires them into a worker; offsets follow the worker's ``Checkpoint``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import faust
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from driftline.clients import clickhouse_client
from driftline.kafka_admin import internal_topic_configs
from driftline.models.tasks import load_tasks
from driftline.online.config import online_config
from driftline.schema.records import AlertRecord, DriftEvent, LabelRequestRecord, PredictionRecord
from driftline.settings import LearningConfig, PipelineConfig, Settings
from driftline.streams.agents import StoreAgent, StoreRejected, send_dead_letter
from driftline.streams.checkpoint import Checkpoint
from driftline.streams.faust_compat import load_topic_metadata
from driftline.streams.learning.feedback import FeedbackOutcome, FeedbackStage, Release
from driftline.streams.learning.label_requests import RequestLabels
from driftline.streams.learning.lookup import LabelsLookup
from driftline.streams.learning.observations import (
    DriftWatch,
    FeedbackObservation,
    ObservationBatch,
    PredictionObservation,
)
from driftline.streams.learning.proposals import ClassProposals
from driftline.streams.learning.request_status import RequestStatus
from driftline.streams.sinks.base import BatchingSink
from driftline.streams.sinks.clickhouse import (
    drift_events_sink,
    feedback_sink,
    label_requests_sink,
    task_labels_sink,
)
from driftline.streams.stages import Stages, raw_message
from driftline.streams.topics import PipelineTopics

log = logging.getLogger(__name__)


class LearningMetrics:
    """Learning-loop series on the pipeline's private registry (served by the same ``/metrics``)."""

    def __init__(self, registry: Any) -> None:
        self.feedback_joined = Counter(
            "driftline_feedback_joined_total",
            "Feedback joined to its prediction",
            ["task"],
            registry=registry,
        )
        self.feedback_correct = Counter(
            "driftline_feedback_correct_total",
            "Joined feedback agreeing with the prediction",
            ["task"],
            registry=registry,
        )
        self.feedback_pending = Gauge(
            "driftline_feedback_pending", "Feedback waiting for its prediction", registry=registry
        )
        self.drift_events = Counter(
            "driftline_drift_events_total", "Drift detections", ["task", "detector"], registry=registry
        )


def observation_key(task: str) -> bytes:
    """JSON-encoded task: the same bytes the drift table's json key serializer writes, so Kafka's
    partitioner puts a task's observations and its checkpoint in the same partition number."""
    return json.dumps(task).encode()


@dataclass
class Learning:
    """The learning loop's parts, for the ``/learning`` view."""

    config: LearningConfig
    feedback: FeedbackStage
    watch: DriftWatch
    metrics: LearningMetrics

    def status(self) -> dict[str, Any]:
        """The ``/learning`` view: join stats and the drift monitors' state."""
        return {
            "feedback": {
                **self.feedback.stats,
                "pending": self.feedback.pending,
                "remembered_predictions": len(self.feedback.joiner),
                "lookup_error": self.feedback.last_lookup_error,
            },
            "drift": self.watch.status(),
        }


class PredictionObserver:
    """The classify hook: remembers predictions for the join and publishes their observations."""

    def __init__(self, stage: FeedbackStage, observations: Any) -> None:
        self.stage = stage
        self.observations = observations

    async def publish(self, batches: dict[str, ObservationBatch]) -> None:
        """One observation message per task, keyed so a task always lands on one partition."""
        for task, batch in batches.items():
            await self.observations.send(key=observation_key(task), value=batch.model_dump_json().encode())

    @staticmethod
    def batches(records: Sequence[PredictionRecord]) -> dict[str, ObservationBatch]:
        """Prediction observations grouped by task."""
        batches: dict[str, ObservationBatch] = {}
        for r in records:
            batches.setdefault(r.task, ObservationBatch(task=r.task)).predictions.append(
                PredictionObservation(
                    label=r.label,
                    confidence=r.confidence,
                    model_version=r.model_version,
                    adapter_hash=r.adapter_hash,
                )
            )
        return batches

    async def __call__(self, records: Sequence[PredictionRecord]) -> None:
        """Remember the predictions for the join and publish their observations."""
        self.stage.remember(records)
        await self.publish(self.batches(records))


class FeedbackAgent:
    """Validates and joins feedback; stores joined rows, dead-letters the rest, then releases offsets."""

    def __init__(
        self,
        stage: FeedbackStage,
        observer: PredictionObserver,
        *,
        config: PipelineConfig,
        learning_config: LearningConfig,
        topics: PipelineTopics,
        sink: BatchingSink,
        stages: Stages,
        metrics: LearningMetrics,
        checkpoint: Checkpoint,
        proposals: ClassProposals | None = None,
    ) -> None:
        self.stage = stage
        self.observer = observer
        self.proposals = proposals
        self.config = config
        self.lc = learning_config
        self.topics = topics
        self.sink = sink
        self.stages = stages
        self.metrics = metrics
        self.checkpoint = checkpoint

    def observations(self, outcome: FeedbackOutcome) -> dict[str, ObservationBatch]:
        """Count joined feedback and group first labels per task as observations."""
        batches: dict[str, ObservationBatch] = {}
        for joined, _, _ in outcome.joined:
            task, p = joined.feedback.task, joined.prediction
            self.metrics.feedback_joined.labels(task).inc()
            if joined.correct:
                self.metrics.feedback_correct.labels(task).inc()
            if joined.first:  # a repeated label for one event must not count twice
                batches.setdefault(task, ObservationBatch(task=task)).feedback.append(
                    FeedbackObservation(
                        event_id=joined.feedback.event_id,
                        correct=joined.correct,
                        model_version=p.model_version,
                        adapter_hash=p.adapter_hash,
                        label=joined.feedback.label,
                    )
                )
        return batches

    async def settle(self, outcome: FeedbackOutcome) -> None:
        """Send dead letters, store joined rows, feed the drift watch; release offsets when done."""
        for letter, release in outcome.dead_letters:
            await self.checkpoint.produced([await send_dead_letter(self.topics, letter)])
            release()
        if outcome.joined:
            await self.observer.publish(self.observations(outcome))
            if self.proposals is not None:  # undeclared labels of open-taxonomy tasks
                await self.proposals([j for j, _, _ in outcome.joined])
            releases: list[Release] = [release for _, release, _ in outcome.joined]

            def stored(releases: list[Release] = releases) -> None:
                for release in releases:
                    release()

            await self.sink.add(
                [j.record().to_row() for j, _, _ in outcome.joined],
                on_stored=stored,
                origins=[msg for _, _, msg in outcome.joined],  # dead-lettered if ClickHouse refuses a row
            )
        self.metrics.feedback_pending.set(self.stage.pending)

    async def process(self, events: Sequence[Any]) -> None:
        """Take in one batch; wait while too much feedback waits for its prediction."""
        items = []
        self.checkpoint.begin(e.message for e in events)
        for event in events:
            msg = raw_message(event)
            self.stages.metrics.events_in.labels(msg.topic).inc()
            # held; settle() releases it once stored or dead-lettered, maybe after the grace period
            items.append((msg, self.checkpoint.hold([event])))
        await self.settle(await self.stage.intake(items))
        while self.stage.pending >= self.lc.max_pending:  # back-pressure while predictions are missing
            await asyncio.sleep(self.lc.retry_s)
            await self.settle(await self.stage.retry())

    async def retry(self) -> None:
        """Timer body: look pending feedback up again (a failure waits for the next tick)."""
        try:
            await self.settle(await self.stage.retry())
        except Exception:  # pending feedback keeps its offsets held
            log.exception("feedback retry failed")

    async def run(self, stream: Any) -> None:
        """The Faust agent body."""
        async for events in stream.take_events(self.config.max_batch, within=self.config.batch_within_s):
            await self.process(events)


class DriftWatchAgent:
    """Steps the per-task drift monitors on observation batches; publishes and stores drift events."""

    def __init__(
        self,
        watch: DriftWatch,
        *,
        app: faust.App,
        table: Any,
        learning_config: LearningConfig,
        topics: PipelineTopics,
        sink: BatchingSink,
        stages: Stages,
        metrics: LearningMetrics,
        checkpoint: Checkpoint,
        on_drift: Callable[[DriftEvent], None] | None = None,
    ) -> None:
        self.watch = watch
        self.on_drift = on_drift
        self.app = app
        self.table = table
        self.lc = learning_config
        self.topics = topics
        self.sink = sink
        self.stages = stages
        self.metrics = metrics
        self.checkpoint = checkpoint

    @staticmethod
    def parse(values: Sequence[bytes | None]) -> list[ObservationBatch]:
        """Observation batches; unreadable ones are logged and skipped."""
        batches = []
        for value in values:
            try:
                batches.append(ObservationBatch.model_validate_json(value or b""))
            except ValidationError as exc:
                log.error("unreadable observation skipped", extra={"error": str(exc)[:300]})
        return batches

    async def publish(self, events: list[DriftEvent]) -> None:
        """One ``drift`` alert per event on the alerts topic."""
        for event in events:
            if self.on_drift is not None:
                self.on_drift(event)
            alert = AlertRecord(**event.to_alert())
            self.metrics.drift_events.labels(event.task, event.detector).inc()
            self.stages.metrics.alerts.labels(alert.kind).inc()
            log.warning(
                "drift",
                extra={
                    "task": event.task,
                    "detector": event.detector,
                    "statistic": event.statistic,
                    "alert": alert.message,
                },
            )
            await self.topics.alerts.send(key=alert.alert_id.encode(), value=alert.model_dump_json().encode())

    async def process(self, events: Sequence[Any]) -> None:
        """Step the monitors (state checkpointed in the table); done once drift rows are stored."""
        messages = [e.message for e in events]
        self.checkpoint.begin(messages)
        detected = self.watch.step(self.parse([m.value for m in messages]))
        if not detected:
            self.checkpoint.done(messages)
            return
        await self.publish(detected)
        await self.sink.add([e.to_row() for e in detected], on_stored=self.checkpoint.hold(events))

    async def run(self, stream: Any) -> None:
        """The Faust agent body."""
        await load_topic_metadata(self.app, self.table.changelog_topic.get_topic_name())
        async for events in stream.take_events(self.lc.observe_max, within=self.lc.observe_within_s):
            await self.process(events)


def register_learning(
    app: faust.App,
    *,
    config: PipelineConfig,
    settings: Settings,
    topics: PipelineTopics,
    stages: Stages,
    sinks: dict[str, BatchingSink],
    checkpoint: Checkpoint,
    learning_config: LearningConfig | None = None,
) -> Learning:
    """Attach the learning loop to a pipeline app; adds the ``feedback`` and ``drift_events`` sinks.

    The feedback and observation topics join ``checkpoint``'s gated topics.
    """
    lc = learning_config or settings.learning
    metrics = LearningMetrics(stages.metrics.registry)
    batching = {
        "max_rows": config.sink_max_rows,
        "max_age_s": config.sink_max_age_s,
        "backoff_s": config.sink_backoff_s,
        "backoff_max_s": config.sink_backoff_max_s,
        "metrics": stages.metrics,
        "settings": settings.clickhouse,
    }
    # a feedback row ClickHouse refuses for good: its feedback message is dead-lettered as store_rejected;
    # a refused drift_events row (no one source message; its alert is on the alerts topic) is logged
    sinks["feedback"] = feedback_sink(rejected=StoreRejected(stages, topics), **batching)
    sinks["drift_events"] = drift_events_sink(**batching)
    sinks["label_requests"] = label_requests_sink(**batching)  # refused rows: logged and counted
    sinks["task_labels"] = task_labels_sink(**batching)
    stage = FeedbackStage(
        lc,
        reject=stages.reject,
        lookup=LabelsLookup(settings.clickhouse, chunk=lc.lookup_chunk),
        max_event_bytes=config.max_event_bytes,
        max_text_chars=config.max_text_chars,
    )
    observations = app.topic(
        f"{config.app_id}-drift-observations",
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.kafka.partitions,
        internal=True,
        config=internal_topic_configs(settings.kafka),
    )
    table = app.Table(
        "drift-monitors",
        partitions=settings.kafka.partitions,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        use_partitioner=True,  # changelog partition from the key, see observation_key
        # short segments let compaction keep recovery short
        extra_topic_configs={**internal_topic_configs(settings.kafka), "segment.ms": str(10 * 60 * 1000)},
    )
    checkpoint.track(topics.feedback.get_topic_name(), observations.get_topic_name())
    watch = DriftWatch(table)
    learning = Learning(lc, stage, watch, metrics)

    observer = PredictionObserver(stage, observations)
    stages.prediction_hooks.append(observer)
    requests = RequestLabels(topics.label_requests)
    stages.prediction_hooks.append(requests)
    store_requests = StoreAgent(
        sinks["label_requests"],
        LabelRequestRecord,
        LabelRequestRecord.to_row,
        config=config,
        metrics=stages.metrics,
        checkpoint=checkpoint,
    )
    app.agent(topics.label_requests, name="store-label-requests")(store_requests.run)
    status = RequestStatus(
        lambda: clickhouse_client(settings.clickhouse),
        lambda task: online_config(task).label_requests.expire_after_s,
        load_tasks(),
    )
    app.timer(interval=lc.request_status_s, on_leader=True, name="label-request-status")(status.update)
    shared = {"topics": topics, "stages": stages, "metrics": metrics, "checkpoint": checkpoint}
    proposals = ClassProposals(
        topics.alerts, sinks["task_labels"], lambda: clickhouse_client(settings.clickhouse)
    )
    feedback = FeedbackAgent(
        stage,
        observer,
        config=config,
        learning_config=lc,
        sink=sinks["feedback"],
        proposals=proposals,
        **shared,
    )
    app.agent(topics.feedback, name="learn-feedback")(feedback.run)
    app.timer(interval=lc.retry_s, name="retry-feedback")(feedback.retry)
    drift = DriftWatchAgent(
        watch,
        app=app,
        table=table,
        learning_config=lc,
        sink=sinks["drift_events"],
        on_drift=requests.drift_seen,
        **shared,
    )
    app.agent(observations, name="drift-watch")(drift.run)

    @app.page("/learning")
    async def learning_view(web: Any, request: Any) -> Any:
        return web.json(learning.status())

    return learning
