"""The topic admin creates topics with the configured partitions, replication factor and topic configs."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from driftline.kafka_admin import create_missing_topics, internal_topic_configs, topic_configs
from driftline.settings import KafkaSettings, Settings


class FakeAdmin:
    """Stands in for ``AIOKafkaAdminClient``: one existing topic, records what is created."""

    created: ClassVar[list[Any]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def list_topics(self) -> list[str]:
        return ["exists"]

    async def create_topics(self, topics: list[Any]) -> None:
        FakeAdmin.created.extend(topics)


async def test_created_topics_carry_the_configured_durability_and_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("aiokafka.admin.AIOKafkaAdminClient", FakeAdmin)
    FakeAdmin.created = []
    settings = Settings(
        kafka={"partitions": 6, "replication_factor": 3, "min_insync_replicas": 2, "max_message_bytes": 12345}
    )
    created = await create_missing_topics(settings, ["exists", "a", "b", "a"])
    assert created == ["a", "b"]
    assert [t.name for t in FakeAdmin.created] == ["a", "b"]
    for topic in FakeAdmin.created:
        assert (topic.num_partitions, topic.replication_factor) == (6, 3)
        assert topic.topic_configs == {"min.insync.replicas": "2", "max.message.bytes": "12345"}


async def test_per_topic_configs_are_added_to_the_common_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aiokafka.admin.AIOKafkaAdminClient", FakeAdmin)
    FakeAdmin.created = []
    settings = Settings(kafka={"min_insync_replicas": 1, "max_message_bytes": 99})
    await create_missing_topics(settings, ["c", "d"], configs={"c": {"cleanup.policy": "compact"}})
    configs = {t.name: t.topic_configs for t in FakeAdmin.created}
    common = {"min.insync.replicas": "1", "max.message.bytes": "99"}
    assert configs == {"c": {**common, "cleanup.policy": "compact"}, "d": common}


def test_topic_configs_and_overrides() -> None:
    kafka = KafkaSettings(replication_factor=2, min_insync_replicas=2)
    assert internal_topic_configs(kafka) == {"min.insync.replicas": "2"}
    assert topic_configs(kafka)["max.message.bytes"] == str(32 << 20)
    assert topic_configs(kafka, max_message_bytes=10)["max.message.bytes"] == "10"


def test_min_insync_replicas_may_not_exceed_the_replication_factor() -> None:
    with pytest.raises(ValueError, match="min_insync_replicas"):
        KafkaSettings(replication_factor=1, min_insync_replicas=2)
