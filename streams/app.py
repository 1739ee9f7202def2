"""Building a pipeline worker: the Faust app, its topics, sinks, agents and web views.

``build_pipeline()`` is a factory so tests and benchmarks can run workers with their own app id, topics and
client; it serves ``/metrics`` and ``/health`` and bounds stream buffers for backpressure.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import faust

from driftline.clients import faust_broker_credentials
from driftline.kafka_admin import internal_topic_configs
from driftline.models.inference.base import InferenceClient
from driftline.settings import PipelineConfig, Settings, get_settings
from driftline.streams.agents import StoreRejected, register_agents
from driftline.streams.checkpoint import Checkpoint
from driftline.streams.faust_compat import install_durable_producer
from driftline.streams.learning.worker import register_learning
from driftline.streams.metrics import PipelineMetrics
from driftline.streams.mirror import ShadowMirror
from driftline.streams.routing import Route, load_routes
from driftline.streams.sinks.base import BatchingSink
from driftline.streams.sinks.clickhouse import (
    alerts_sink,
    dead_letters_sink,
    labels_sink,
    shadow_predictions_sink,
)
from driftline.streams.stages import Stages
from driftline.streams.surges import SurgeMonitor
from driftline.streams.topics import PipelineTopics, declare_topics


@dataclass
class Pipeline:
    """A built worker: the Faust app and the parts tests and views reach."""

    app: faust.App
    config: PipelineConfig
    routes: list[Route]
    topics: PipelineTopics
    stages: Stages
    sinks: dict[str, BatchingSink]
    metrics: PipelineMetrics
    client: InferenceClient

    async def health(self) -> dict[str, Any]:
        """The ``/health`` report: partitions, inference readiness, sink state."""
        checks: dict[str, Any] = {}
        try:
            assigned = sorted(str(tp) for tp in self.app.consumer.assignment())
        except Exception:
            assigned = []
        checks["kafka_assigned_partitions"] = len(assigned)
        ready = {}
        for route in self.routes:
            try:
                ready[route.model_name] = bool(await self.client.is_ready(route.model_name))
            except Exception:
                ready[route.model_name] = False
        checks["inference_ready"] = ready
        checks["sinks"] = {
            name: {
                "ok": sink.healthy,
                "pending": sink.pending,
                "error": sink.last_error,
                "stored": sink.stored_rows,
                "rejected": sink.rejected_rows,
            }
            for name, sink in self.sinks.items()
        }
        now = time.time()
        checks["inference_backoff"] = {
            task: {"state": b.state, "error": b.error, "for_s": round(now - b.since, 1), "retries": b.retries}
            for task, b in self.stages.health.backing_off.items()
        }
        ok = bool(assigned) and all(ready.values()) and all(s.healthy for s in self.sinks.values())
        status = "failing" if not ok else "degraded" if checks["inference_backoff"] else "ok"
        uptime = round(now - self.stages.health.started_at)
        return {
            "ok": ok,
            "status": status,
            "app_id": self.config.app_id,
            "uptime_s": uptime,
            "checks": checks,
        }


def broker_url(settings: Settings) -> str:
    """Faust's broker URL for the configured bootstrap servers."""
    return ";".join(f"kafka://{hp}" for hp in settings.kafka.bootstrap.split(","))


def build_pipeline(
    client: InferenceClient,
    *,
    config: PipelineConfig | None = None,
    settings: Settings | None = None,
    web_port: int | None = None,
    surge_partitions: int | None = None,
) -> Pipeline:
    """Build a pipeline worker: app, topics, checkpoint, sinks, agents and web views.

    ``surge_partitions``: the predictions topic's partition count, which the surge tables must share
    (Faust refuses a table whose source topic has another count); default ``kafka.partitions``.
    """
    settings = settings or get_settings()
    config = config or settings.pipeline
    routes = load_routes(settings)
    datadir = settings.run_dir / "faust" / config.app_id  # Faust's own "<app id>-data" lands in the cwd
    datadir.parent.mkdir(parents=True, exist_ok=True)  # Faust makes only the last folder
    app = faust.App(
        config.app_id,
        broker=broker_url(settings),
        broker_credentials=faust_broker_credentials(settings),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        datadir=datadir,
        topic_partitions=settings.kafka.partitions,
        topic_replication_factor=settings.kafka.replication_factor,  # internal topics, changelogs
        producer_acks=-1,  # acks=all; idempotence: faust_compat.install_durable_producer
        web_host=settings.web_host,
        web_port=web_port or settings.web_port,
        web_enabled=True,
        consumer_auto_offset_reset="earliest",
        # big enough for the largest event we accept plus its dead letter
        producer_max_request_size=max(config.max_event_bytes, config.deadletter_payload_bytes) * 2
        + (1 << 20),
        consumer_max_fetch_size=max(config.max_event_bytes * 2, 4 << 20),
        broker_commit_interval=1.0,
        broker_session_timeout=config.session_timeout_s,
        # backpressure: a paused agent's buffer stays small and one fetch cannot overfill it (docstring)
        stream_buffer_maxsize=config.stream_buffer_maxsize,
        broker_max_poll_records=max(1, config.stream_buffer_maxsize // 5),
        table_cleanup_interval=max(config.surge.window_s, 5.0),
    )
    install_durable_producer(app)
    metrics = PipelineMetrics()
    topics = declare_topics(app, settings.kafka.topics, routes)
    # offsets of these topics commit only once their outputs are durable (streams.checkpoint)
    checkpoint = Checkpoint(
        [
            *topics.inputs,
            topics.predictions.get_topic_name(),
            topics.alerts.get_topic_name(),
            topics.deadletter.get_topic_name(),
            topics.label_requests.get_topic_name(),
        ],
        redeliver_after_s=config.redeliver_after_s,
        on_redeliver=lambda topic: metrics.redeliveries.labels(topic).inc(),
    )
    checkpoint.install(app)
    batching = {
        "max_rows": config.sink_max_rows,
        "max_age_s": config.sink_max_age_s,
        "backoff_s": config.sink_backoff_s,
        "backoff_max_s": config.sink_backoff_max_s,
        "metrics": metrics,
    }
    stages = Stages(config, client, metrics)
    # rows ClickHouse refuses for good are dead-lettered as store_rejected; refused dead_letters rows
    # are only logged and counted (dead-lettering a dead letter again could loop)
    store_rejected = StoreRejected(stages, topics)
    sinks: dict[str, BatchingSink] = {
        "labels": labels_sink(settings=settings.clickhouse, rejected=store_rejected, **batching),
        "alerts": alerts_sink(settings=settings.clickhouse, rejected=store_rejected, **batching),
        "dead_letters": dead_letters_sink(settings=settings.clickhouse, **batching),
    }
    checkpoint.sinks = sinks
    surge = SurgeMonitor(
        app,
        config.surge,
        surge_partitions or settings.kafka.partitions,
        topic_configs=internal_topic_configs(settings.kafka),
    )
    register_agents(
        app,
        config=config,
        routes=routes,
        topics=topics,
        stages=stages,
        sinks=sinks,
        surge=surge,
        checkpoint=checkpoint,
    )
    # feedback join + drift monitors; adds the feedback and drift_events sinks to ``sinks``
    register_learning(
        app,
        config=config,
        settings=settings,
        topics=topics,
        stages=stages,
        sinks=sinks,
        checkpoint=checkpoint,
    )
    # a share of events also goes to a model's shadow version while one is loaded (never published)
    sinks["shadow_predictions"] = shadow_predictions_sink(settings=settings.clickhouse, **batching)
    shadow = ShadowMirror(
        client, sinks["shadow_predictions"], share=config.shadow_share, check_s=config.shadow_check_s
    )
    stages.prediction_hooks.append(shadow)
    pipeline = Pipeline(app, config, routes, topics, stages, sinks, metrics, client)

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        body, content_type = metrics.render()
        return web.bytes(body, content_type=content_type.split(";")[0])

    @app.page("/health")
    async def health_view(web: Any, request: Any) -> Any:
        report = await pipeline.health()
        return web.bytes(
            json.dumps(report).encode(), content_type="application/json", status=200 if report["ok"] else 503
        )

    @app.on_before_shutdown.connect
    async def _close(app: Any, **kwargs: Any) -> None:
        await shadow.close()  # mirrors in flight reach their sink before the last flush
        await checkpoint.flush()  # shutdown goes on; offsets of rows not flushed were never committed
        await client.close()

    return pipeline


def make_client(kind: str) -> InferenceClient:
    """``triton`` (gRPC to the configured Triton) or ``local`` (in-process, from triton_repo)."""
    if kind == "triton":
        from driftline.models.inference.triton import TritonClient

        return TritonClient()
    if kind == "local":
        from driftline.models.inference.local import LocalClient

        return LocalClient()
    raise ValueError(f"unknown inference client {kind!r}; expected 'triton' or 'local'")
