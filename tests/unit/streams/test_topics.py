"""The Faust app creates its internal topics and changelogs with the configured durability settings."""

from __future__ import annotations

from driftline.settings import Settings
from driftline.streams.app import build_pipeline
from driftline.streams.topics import internal_topics
from tests.unit.streams.test_stages import FakeClient


def test_internal_topics_and_changelogs_use_the_kafka_settings() -> None:
    settings = Settings(kafka={"replication_factor": 3, "min_insync_replicas": 2})
    app = build_pipeline(FakeClient(), settings=settings, web_port=1).app
    assert app.conf.topic_replication_factor == 3
    assert app.tables, "the pipeline declares no tables"
    for table in app.tables.values():
        assert table.changelog_topic.config["min.insync.replicas"] == "2", table.name


def test_the_worker_knows_every_internal_topic_before_faust_declares_it() -> None:
    """Each internal topic (drift observations, changelogs) with the configs Faust would create it with."""
    settings = Settings(kafka={"partitions": 3, "min_insync_replicas": 1})
    app = build_pipeline(FakeClient(), settings=settings, web_port=1).app
    found = internal_topics(app)
    changelogs = {t.changelog_topic.get_topic_name(): t for t in app.tables.values()}
    observations = [n for n in found if n.endswith("-drift-observations")]
    assert len(observations) == 1 and set(changelogs) <= set(found)
    assert set(found) == {*changelogs, *observations}, "only internal topics"
    for name, (partitions, config) in found.items():
        assert partitions == 3 and config["min.insync.replicas"] == "1", name
    for name, table in changelogs.items():
        policy = set(found[name][1]["cleanup.policy"].split(","))
        assert "compact" in policy, name
        expires = bool(table.changelog_topic.retention)
        assert ("delete" in policy) == ("retention.ms" in found[name][1]) == expires, name
