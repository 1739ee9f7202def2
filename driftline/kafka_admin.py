"""Kafka topic administration: the one path that creates driftline's topics.

Stack, workers and tests all create topics here, so every topic gets the same configured security,
partitions, replication and limits; ``internal_topic_configs`` gives Faust's own topics the same durability.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from driftline.clients import kafka_client_kwargs
from driftline.settings import KafkaSettings, Settings


def internal_topic_configs(kafka: KafkaSettings) -> dict[str, str]:
    """Topic configs for Faust's internal topics and table changelogs (durability only)."""
    return {"min.insync.replicas": str(kafka.min_insync_replicas)}


def topic_configs(kafka: KafkaSettings, max_message_bytes: int | None = None) -> dict[str, str]:
    """Topic configs of the topics driftline creates: durability plus the raised message limit.

    The limit (``kafka.max_message_bytes``) is above the broker's 1 MB default so that an oversized
    event (a 10 MB text) reaches a worker and is dead-lettered with a reason, instead of being
    refused by the broker with no trace in driftline.
    """
    limit = kafka.max_message_bytes if max_message_bytes is None else max_message_bytes
    return {**internal_topic_configs(kafka), "max.message.bytes": str(limit)}


async def create_missing_topics(
    settings: Settings,
    names: list[str],
    *,
    partitions: int | None = None,
    bootstrap: str | None = None,
    max_message_bytes: int | None = None,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> list[str]:
    """Create the topics in ``names`` that do not exist yet; returns the ones created.

    The one topic-creation path (stack up, ``stack init``, workers at start-up, tests): it uses the
    configured Kafka security settings, partitions, replication factor and topic configs (the
    keyword arguments override partitions and the message limit; ``configs`` adds per-topic
    settings, such as a changelog's ``cleanup.policy``), and tolerates another process creating a
    topic first. Existing topics are left as they are.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    kafka = settings.kafka
    admin = AIOKafkaAdminClient(
        **kafka_client_kwargs(settings, bootstrap=bootstrap, request_timeout_ms=15000)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if missing:
            config = topic_configs(kafka, max_message_bytes)
            new = [
                NewTopic(
                    name=n,
                    num_partitions=partitions or kafka.partitions,
                    replication_factor=kafka.replication_factor,
                    topic_configs={**config, **(configs or {}).get(n, {})},
                )
                for n in missing
            ]
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
                await admin.create_topics(new)
        return missing
    finally:
        await admin.close()


async def partition_counts(
    settings: Settings, names: list[str], *, bootstrap: str | None = None
) -> dict[str, int]:
    """How many partitions each existing topic in ``names`` has (a missing topic is left out).

    What a worker sizes its tables by when they are co-partitioned with a topic it does not own
    (the surge tables with the predictions topic): a topic created before, by hand or by another
    deployment, keeps its own partition count, whatever ``kafka.partitions`` says now.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        **kafka_client_kwargs(settings, bootstrap=bootstrap, request_timeout_ms=15000)
    )
    await admin.start()
    try:
        described = await admin.describe_topics(list(dict.fromkeys(names)))
    finally:
        await admin.close()
    found = [t for t in described if t.get("error_code") == 0 and t["partitions"]]
    return {t["topic"]: len(t["partitions"]) for t in found}
