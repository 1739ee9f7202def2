"""Prometheus metrics of one pipeline worker, on a private registry served at ``/metrics``.

A private ``CollectorRegistry`` (not the process-global default) lets tests build several apps in
one process without "duplicated timeseries" errors, and keeps library metrics out of the scrape.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class PipelineMetrics:
    """The pipeline's Prometheus series on a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_in = Counter("driftline_events_in_total", "Messages consumed", ["topic"], registry=r)
        self.events_ok = Counter(
            "driftline_events_classified_total", "Events classified", ["task"], registry=r
        )
        self.batch_size = Histogram(
            "driftline_batch_size", "Events per inference batch", ["task"], buckets=BATCH_BUCKETS, registry=r
        )
        self.inference_latency = Histogram(
            "driftline_inference_latency_seconds",
            "Inference call latency per batch",
            ["task"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_retries = Counter(
            "driftline_inference_retries_total",
            "Failed inference calls retried, by cause: overloaded (server busy or slow), unavailable "
            "(model not ready, server away), rejected (one event refused by a ready model)",
            ["task", "cause"],
            registry=r,
        )
        self.inference_backpressure = Gauge(
            "driftline_inference_backpressure",
            "1 while the task's inference is backing off (no more input taken, offsets held), else 0",
            ["task"],
            registry=r,
        )
        self.dead_letters = Counter(
            "driftline_dead_letters_total", "Messages dead-lettered", ["topic", "reason"], registry=r
        )
        self.alerts = Counter("driftline_alerts_total", "Alerts raised", ["kind"], registry=r)
        self.sink_rows = Counter("driftline_sink_rows_total", "Rows stored", ["sink"], registry=r)
        self.sink_flush_latency = Histogram(
            "driftline_sink_flush_seconds",
            "Time to store one batch",
            ["sink"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.sink_flush_rows = Histogram(
            "driftline_sink_flush_rows", "Rows per insert", ["sink"], buckets=BATCH_BUCKETS, registry=r
        )
        self.sink_retries = Counter(
            "driftline_sink_retries_total",
            "Failed inserts (or hand-overs of refused rows) retried",
            ["sink"],
            registry=r,
        )
        self.sink_rejected = Counter(
            "driftline_sink_rejected_rows_total",
            "Rows the store refused for good (dead-lettered as store_rejected, or logged)",
            ["sink"],
            registry=r,
        )
        self.redeliveries = Counter(
            "driftline_redeliveries_total",
            "Partitions sought back to a committed offset that became a hole (skipped or abandoned)",
            ["topic"],
            registry=r,
        )
        self.sink_pending = Gauge(
            "driftline_sink_pending_rows", "Rows buffered, not yet stored", ["sink"], registry=r
        )
        self.sink_lag = Gauge(
            "driftline_sink_lag_seconds",
            "Age of the oldest buffered row (0 when empty)",
            ["sink"],
            registry=r,
        )
        self.end_to_end = Histogram(
            "driftline_event_to_label_seconds",
            "Event time to label stored",
            ["task"],
            buckets=(*LATENCY_BUCKETS, 60, 300),
            registry=r,
        )

    def render(self) -> tuple[bytes, str]:
        """The registry in Prometheus text format, with its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
