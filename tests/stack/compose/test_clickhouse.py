"""The shared ClickHouse 18.16 server: migrations apply once (idempotent), the core tables exist, and
label rows insert, select and collapse on replay.
"""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from driftline.apps.testing.harness import unique_suffix
from driftline.schema.migrate import MIGRATIONS_DIR, apply_migrations, discover


def _client_factory(settings):
    from clickhouse_driver import Client

    c = settings.clickhouse

    def connect(database: str) -> Client:
        return Client(
            c.host, port=c.port, user=c.user, password=c.password.get_secret_value(), database=database
        )

    return connect


@pytest.mark.stack
def test_migrations_idempotent_on_server(settings):
    """Fresh database: first run applies every file, second run applies nothing."""
    database = unique_suffix("mig_")
    connect = _client_factory(settings)
    try:
        first = apply_migrations(connect, database)
        second = apply_migrations(connect, database)
        recorded = connect(database).execute("SELECT name, checksum FROM schema_migrations ORDER BY name")
    finally:
        connect("default").execute(f"DROP DATABASE IF EXISTS `{database}`")
    all_names = [m.name for m in discover(MIGRATIONS_DIR)]
    assert first.applied == all_names
    assert second.applied == [] and second.skipped == all_names
    assert [(m.name, m.checksum) for m in discover(MIGRATIONS_DIR)] == recorded


@pytest.mark.stack
def test_shared_database_has_core_tables(ch, settings):
    tables = {row[0] for row in ch.execute("SHOW TABLES")}
    assert {"labels", "alerts", "dead_letters", "schema_migrations"} <= tables
    applied = {row[0] for row in ch.execute("SELECT name FROM schema_migrations")}
    assert "0001_core.sql" in applied


@pytest.mark.stack
def test_labels_insert_select_and_replay_collapses(ch):
    task = unique_suffix("test-task-")
    now = datetime.utcnow().replace(microsecond=0)
    ts = int(time.time() * 1000)

    def row(label: str, processed_ts: int):
        return {
            "task": task, "event_id": "e1", "topic": "t", "partition": 0, "kafka_offset": 7,
            "event_time": now, "processed_time": now, "event_ts_ms": ts, "processed_ts_ms": processed_ts,
            "text": "héllo", "source": "s", "channel": "c", "language": "en", "label": label,
            "confidence": 0.9, "label_names": ["pos", "neg"], "probabilities": [0.9, 0.1],
            "explanation": ["[\"h\", 0.5]"], "model_name": "m", "model_version": "1",
            "adapter_hash": "abc", "truncated": 0, "latency_ms": 1.5, "engine": "ort-int8",
        }  # fmt: skip

    try:
        ch.execute("INSERT INTO labels VALUES", [row("pos", ts), row("neg", ts + 1)])
        final = ch.execute(
            "SELECT label, probabilities, text FROM labels FINAL WHERE task = %(t)s AND event_id = 'e1'",
            {"t": task},
        )
        assert len(final) == 1
        assert final[0][0] == "neg" and final[0][2] == "héllo"
        assert [round(p, 3) for p in final[0][1]] == [0.9, 0.1]
    finally:
        ch.execute("ALTER TABLE labels DELETE WHERE task = %(t)s", {"t": task})
