"""Sinks: one batching base (``BatchingSink``) and its ClickHouse implementation."""

from driftline.streams.sinks.base import BatchingSink
from driftline.streams.sinks.clickhouse import ClickHouseSink, alerts_sink, dead_letters_sink, labels_sink

__all__ = ["BatchingSink", "ClickHouseSink", "alerts_sink", "dead_letters_sink", "labels_sink"]
