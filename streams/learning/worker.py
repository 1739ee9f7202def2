"""The learning loop's Faust side: feedback agent, drift-watch agent, retry timer, ``/learning`` view.

Data flow (all JSON, topics raw bytes)::

    classify agents --prediction hook--> FeedbackJoiner (memory) + observations topic (key: task)
    feedback topic --validate/join--> ClickHouse feedback --> observations topic
                        '--bad / unknown_event_id--> deadletter topic
    observations topic --DriftMonitor per task--> alerts topic (kind "drift") + ClickHouse drift_events
                        '--state--> Faust table ``drift-monitors`` (changelog: survives restarts)

Offsets follow the pipeline's *flush, then commit* rule (see ``driftline.streams.agents``): a feedback message
is acknowledged only once its joined row is stored or its dead letter sent - pending feedback keeps
its offset uncommitted, so a crash during the grace period redelivers it. Observation batches that
raised a drift event are acknowledged once the ``drift_events`` rows are stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faust
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from driftline.schema.records import AlertRecord, DriftEvent, PredictionRecord
from driftline.settings import LearningConfig, PipelineConfig, Settings
from driftline.streams.agents import Stages, _pin, _raw
from driftline.streams.learning.feedback import FeedbackOutcome, FeedbackStage, Release
from driftline.streams.learning.lookup import LabelsLookup
from driftline.streams.learning.observations import (
    DriftWatch,
    FeedbackObservation,
    ObservationBatch,
    PredictionObservation,
)
from driftline.streams.offsets import CommitGate
from driftline.streams.sinks.base import BatchingSink
from driftline.streams.sinks.clickhouse import drift_events_sink, feedback_sink
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
    config: LearningConfig
    feedback: FeedbackStage
    watch: DriftWatch
    metrics: LearningMetrics

    def status(self) -> dict[str, Any]:
        return {
            "feedback": {
                **self.feedback.stats,
                "pending": self.feedback.pending,
                "remembered_predictions": len(self.feedback.joiner),
                "lookup_error": self.feedback.last_lookup_error,
            },
            "drift": self.watch.status(),
        }


async def _load_topic_metadata(app: faust.App, topic: str) -> None:
    """Make the producer fetch ``topic``'s partitions before the first table write.

    The monitor table uses ``use_partitioner=True``, so Faust picks the changelog partition eagerly
    from the producer's cached metadata (``key_partition``) without fetching it; aiokafka then fails
    with ``TypeError: 'NoneType' object is not iterable`` when the producer has never sent to the
    changelog topic (seen on a fresh worker). One metadata round trip at start-up avoids that.
    """
    producer = app.producer._ensure_producer()  # aiokafka producer behind Faust's
    await producer.client._wait_on_metadata(topic)


def register_learning(
    app: faust.App,
    *,
    config: PipelineConfig,
    settings: Settings,
    topics: PipelineTopics,
    stages: Stages,
    sinks: dict[str, BatchingSink],
    learning_config: LearningConfig | None = None,
    gate: CommitGate | None = None,
) -> Learning:
    """Attach the learning loop to a pipeline app; adds the ``feedback`` and ``drift_events`` sinks.

    ``gate``: the app's commit gate (``driftline.streams.offsets``). The feedback and observation topics join
    it, so their offsets commit only once a message was really handled - Faust acks messages it
    skipped during a rebalance or table recovery, which would otherwise lose feedback sent while a
    replacement worker recovers its drift monitors.
    """
    gate = gate if gate is not None else CommitGate()
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
    sinks["feedback"] = feedback_sink(**batching)
    sinks["drift_events"] = drift_events_sink(**batching)
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
    )
    table = app.Table(
        "drift-monitors",
        partitions=settings.kafka.partitions,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        use_partitioner=True,  # changelog partition from the key, see observation_key
        extra_topic_configs={"segment.ms": str(10 * 60 * 1000)},  # let compaction keep recovery short
    )
    gate.topics.update({topics.feedback.get_topic_name(), observations.get_topic_name()})
    watch = DriftWatch(table)
    learning = Learning(lc, stage, watch, metrics)

    async def observe(batches: dict[str, ObservationBatch]) -> None:
        for task, batch in batches.items():
            await observations.send(key=observation_key(task), value=batch.model_dump_json().encode())

    async def on_predictions(records: Sequence[PredictionRecord]) -> None:
        stage.remember(records)
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
        await observe(batches)

    stages.prediction_hooks.append(on_predictions)

    async def settle(outcome: FeedbackOutcome) -> None:
        """Send dead letters, store joined rows, feed the drift watch; release offsets when done."""
        for letter, release in outcome.dead_letters:
            sent = await topics.deadletter.send(
                key=f"{letter.topic}:{letter.partition}:{letter.offset}".encode(),
                value=letter.model_dump_json().encode(),
                force=True,
            )
            await sent  # acked by Kafka before the feedback's offset may commit
            release()
        if outcome.joined:
            batches: dict[str, ObservationBatch] = {}
            for joined, _ in outcome.joined:
                task, p = joined.feedback.task, joined.prediction
                metrics.feedback_joined.labels(task).inc()
                if joined.correct:
                    metrics.feedback_correct.labels(task).inc()
                if joined.first:  # a repeated label for one event must not count twice
                    batches.setdefault(task, ObservationBatch(task=task)).feedback.append(
                        FeedbackObservation(
                            event_id=joined.feedback.event_id,
                            correct=joined.correct,
                            model_version=p.model_version,
                            adapter_hash=p.adapter_hash,
                        )
                    )
            await observe(batches)
            releases: list[Release] = [release for _, release in outcome.joined]

            def stored(releases: list[Release] = releases) -> None:
                for release in releases:
                    release()

            await sinks["feedback"].add([j.record().to_row() for j, _ in outcome.joined], on_stored=stored)
        metrics.feedback_pending.set(stage.pending)

    async def learn_feedback(stream: Any) -> None:
        async for events in stream.take_events(config.max_batch, within=config.batch_within_s):
            items = []
            gate.begin(e.message for e in events)
            for event in events:
                msg = _raw(event)
                stages.metrics.events_in.labels(msg.topic).inc()
                # pinned; settle() releases it once stored or dead-lettered, maybe after the grace period
                items.append((msg, _pin([event], gate=gate)))
            await settle(await stage.intake(items))
            while stage.pending >= lc.max_pending:  # back-pressure while predictions are missing
                await asyncio.sleep(lc.retry_s)
                await settle(await stage.retry())

    app.agent(topics.feedback, name="learn-feedback")(learn_feedback)

    @app.timer(interval=lc.retry_s)
    async def retry_feedback() -> None:
        try:
            await settle(await stage.retry())
        except Exception:  # the next tick tries again; pending feedback keeps its offsets held
            log.exception("feedback retry failed")

    async def publish_drift(events: list[DriftEvent]) -> None:
        for event in events:
            alert = AlertRecord(**event.to_alert())
            metrics.drift_events.labels(event.task, event.detector).inc()
            stages.metrics.alerts.labels(alert.kind).inc()
            log.warning(
                "drift",
                extra={
                    "task": event.task,
                    "detector": event.detector,
                    "statistic": event.statistic,
                    "alert": alert.message,
                },
            )
            await topics.alerts.send(key=alert.alert_id.encode(), value=alert.model_dump_json().encode())

    async def watch_drift(stream: Any) -> None:
        await _load_topic_metadata(app, table.changelog_topic.get_topic_name())
        async for events in stream.take_events(lc.observe_max, within=lc.observe_within_s):
            messages = [e.message for e in events]
            gate.begin(messages)
            batches = []
            for event in events:
                try:
                    batches.append(ObservationBatch.model_validate_json(event.message.value or b""))
                except ValidationError as exc:
                    log.error("unreadable observation skipped", extra={"error": str(exc)[:300]})
            detected = watch.step(batches)  # the monitors' new state is in the table (changelogged)
            if not detected:
                gate.done(messages)
                continue
            await publish_drift(detected)
            await sinks["drift_events"].add([e.to_row() for e in detected], on_stored=_pin(events, gate=gate))

    app.agent(observations, name="drift-watch")(watch_drift)

    @app.page("/learning")
    async def learning_view(web: Any, request: Any) -> Any:
        return web.json(learning.status())

    return learning
