"""Faust topic objects for the pipeline, named from ``driftline.settings`` (``DRIFTLINE_KAFKA__TOPICS__*``).

Every topic carries raw bytes: inputs are decoded by ``driftline.streams.decode`` so bad bytes can be
dead-lettered, and outputs are pydantic JSON written by us, so other consumers (drift detectors,
the dashboard) read plain JSON without Faust.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import faust
from mode.utils.times import want_seconds

from driftline.kafka_admin import create_missing_topics
from driftline.settings import Topics, get_settings
from driftline.streams.routing import Route


@dataclass
class PipelineTopics:
    """The pipeline's Faust topics."""

    inputs: dict[str, faust.TopicT]  # by topic name, one per route
    feedback: faust.TopicT
    predictions: faust.TopicT
    alerts: faust.TopicT
    deadletter: faust.TopicT
    label_requests: faust.TopicT


def declare_topics(app: faust.App, names: Topics, routes: list[Route]) -> PipelineTopics:
    """Declare the pipeline's topics on ``app``."""

    def topic(name: str) -> faust.TopicT:
        return app.topic(name, key_serializer="raw", value_serializer="raw")

    return PipelineTopics(
        inputs={route.topic: topic(route.topic) for route in routes},
        feedback=topic(names.feedback),
        predictions=topic(names.predictions),
        alerts=topic(names.alerts),
        deadletter=topic(names.deadletter),
        label_requests=topic(names.label_requests),
    )


async def ensure_topics(
    bootstrap: str,
    names: list[str],
    partitions: int | None = None,
    max_message_bytes: int | None = None,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> list[str]:
    """Create missing topics (a worker started before its topics exist would get no partitions).

    Delegates to the stack's single topic-creation path, so security settings, the replication
    factor and the raised ``max.message.bytes`` (oversized input must reach the worker to be
    dead-lettered) apply here too; partitions and the limit default to the settings.
    """
    return await create_missing_topics(
        get_settings(),
        names,
        partitions=partitions,
        bootstrap=bootstrap,
        max_message_bytes=max_message_bytes,
        configs=configs,
    )


def internal_topics(app: faust.App) -> dict[str, tuple[int, dict[str, str]]]:
    """Faust's internal topics (agent channels, table changelogs): partitions and topic configs.

    Faust declares these itself, but only while the consumer subscribes, which races the first
    group assignment: a topic created in that window is left out of the assignment ("Ignoring
    missing topic") and its first messages wait for a later rebalance. The worker creates them
    before it starts, with the configs Faust would give them (``cleanup.policy``, ``retention.ms``).
    """
    channels = [agent.channel for agent in app.agents.values()]
    channels += [table.changelog_topic for table in app.tables.values()]
    found: dict[str, tuple[int, dict[str, str]]] = {}
    for channel in channels:
        if not getattr(channel, "internal", False):
            continue
        config = {k: str(v) for k, v in (channel.config or {}).items()}
        policy = [p for p, on in (("compact", channel.compacting), ("delete", channel.deleting)) if on]
        if policy:
            config["cleanup.policy"] = ",".join(sorted(policy))
        if channel.retention:
            config["retention.ms"] = str(int(want_seconds(channel.retention) * 1000))
        for name in channel.topics:
            found[name] = (channel.partitions or app.conf.topic_partitions, config)
    return found


def pipeline_topic_names(names: Topics, routes: list[Route]) -> list[str]:
    """Every topic a pipeline worker consumes or produces."""
    return [
        *(r.topic for r in routes),
        names.feedback,
        names.predictions,
        names.alerts,
        names.deadletter,
        names.label_requests,
    ]
