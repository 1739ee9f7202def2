"""Faust topic objects for the pipeline, named from ``compose.settings`` (``DRIFTLINE_TOPIC_*``).

Every topic carries raw bytes: inputs are decoded by ``streams.schemas`` so bad bytes can be
dead-lettered, and outputs are pydantic JSON written by us, so other consumers (drift detectors,
the dashboard) read plain JSON without Faust.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import faust

from compose.settings import Topics
from streams.routing import Route


@dataclass
class PipelineTopics:
    inputs: dict[str, faust.TopicT]  # by topic name, one per route
    feedback: faust.TopicT
    predictions: faust.TopicT
    alerts: faust.TopicT
    deadletter: faust.TopicT


def declare_topics(app: faust.App, names: Topics, routes: list[Route]) -> PipelineTopics:
    def topic(name: str) -> faust.TopicT:
        return app.topic(name, key_serializer="raw", value_serializer="raw")

    return PipelineTopics(
        inputs={route.topic: topic(route.topic) for route in routes},
        feedback=topic(names.feedback),
        predictions=topic(names.predictions),
        alerts=topic(names.alerts),
        deadletter=topic(names.deadletter),
    )


async def ensure_topics(
    bootstrap: str, names: list[str], partitions: int, max_message_bytes: int
) -> list[str]:
    """Create missing topics (a worker started before its topics exist would get no partitions).

    ``max.message.bytes`` is raised on topics we create so oversized input reaches the worker and is
    dead-lettered with a reason instead of being refused by the broker with no trace.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if missing:
            config = {"max.message.bytes": str(max_message_bytes)}
            new = [
                NewTopic(n, num_partitions=partitions, replication_factor=1, topic_configs=config)
                for n in missing
            ]
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
                await admin.create_topics(new)
        return missing
    finally:
        await admin.close()


def pipeline_topic_names(names: Topics, routes: list[Route]) -> list[str]:
    return [*(r.topic for r in routes), names.feedback, names.predictions, names.alerts, names.deadletter]
