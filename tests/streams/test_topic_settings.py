"""The Faust app creates its internal topics and changelogs with the configured durability settings."""

from __future__ import annotations

from driftline.settings import Settings
from driftline.streams.app import build_pipeline
from tests.streams.test_units import FakeClient


def test_internal_topics_and_changelogs_use_the_kafka_settings() -> None:
    settings = Settings(kafka={"replication_factor": 3, "min_insync_replicas": 2})
    app = build_pipeline(FakeClient(), settings=settings, web_port=1).app
    assert app.conf.topic_replication_factor == 3
    assert app.tables, "the pipeline declares no tables"
    for table in app.tables.values():
        assert table.changelog_topic.config["min.insync.replicas"] == "2", table.name
