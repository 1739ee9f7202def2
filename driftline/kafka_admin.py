"""Kafka topic administration: the one path that creates driftline's topics.

The stack (``stack up``/``stack init``), the workers at start-up and the tests all create topics
here, so every topic gets the same configured security, partition count, message-size limit,
replication factor and ``min.insync.replicas`` (``DRIFTLINE_KAFKA__REPLICATION_FACTOR`` /
``DRIFTLINE_KAFKA__MIN_INSYNC_REPLICAS``: with ``acks=all`` producers a write then survives the loss
of ``replication_factor - min_insync_replicas`` brokers without blocking).
"""

from __future__ import annotations

import contextlib

from driftline.clients import kafka_client_kwargs
from driftline.settings import Settings

#: Topic-level message size limit for the topics driftline creates: large enough that an oversized
#: event (a 10 MB text) reaches a worker and is dead-lettered with a reason, instead of being refused
#: by the broker (default 1 MB) with no trace in driftline.
TOPIC_MAX_MESSAGE_BYTES = 32 << 20


def topic_durability_config(settings: Settings) -> dict[str, str]:
    """Topic configs of every topic driftline creates: ``min.insync.replicas`` from settings."""
    return {"min.insync.replicas": str(settings.kafka.min_insync_replicas)}


async def create_missing_topics(
    settings: Settings,
    names: list[str],
    *,
    partitions: int,
    bootstrap: str | None = None,
    max_message_bytes: int = TOPIC_MAX_MESSAGE_BYTES,
) -> list[str]:
    """Create the topics in ``names`` that do not exist yet; returns the ones created.

    The one topic-creation path (stack up, ``stack init``, workers at start-up, tests): it uses the
    configured Kafka security settings, and tolerates another process creating a topic first.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(
        **kafka_client_kwargs(settings, bootstrap=bootstrap, request_timeout_ms=15000)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if missing:
            new = [
                NewTopic(
                    name=n,
                    num_partitions=partitions,
                    replication_factor=settings.kafka.replication_factor,
                    topic_configs={
                        "max.message.bytes": str(max_message_bytes),
                        **topic_durability_config(settings),
                    },
                )
                for n in missing
            ]
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
                await admin.create_topics(new)
        return missing
    finally:
        await admin.close()
