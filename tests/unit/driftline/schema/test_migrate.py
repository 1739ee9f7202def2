"""The migration runner without a server (``driftline.schema.migrate``): statements split at line-end
semicolons, files are numbered and unique, and every migration runs on chDB in order.
"""

from __future__ import annotations

from driftline.schema.migrate import discover, split_statements


def test_split_statements_on_line_end_semicolons():
    sql = "-- header; not a statement\nCREATE TABLE a (x String) ENGINE = Memory;\n\nSELECT 'a;b'\nFROM a;\n"
    assert split_statements(sql) == ["CREATE TABLE a (x String) ENGINE = Memory", "SELECT 'a;b'\nFROM a"]


def test_migration_files_are_numbered_and_unique():
    names = [m.name for m in discover()]
    assert names and names[0] == "0001_core.sql"
    prefixes = [n.split("_", 1)[0] for n in names]
    assert all(p.isdigit() for p in prefixes) and len(set(prefixes)) == len(prefixes)


def test_migrations_accepted_by_chdb():
    """Every statement of every migration file runs on modern ClickHouse (chDB), in order."""
    from chdb import session

    sess = session.Session()
    try:
        sess.query("CREATE DATABASE IF NOT EXISTS mig_check")
        sess.query("USE mig_check")
        for migration in discover():
            for statement in migration.statements():
                sess.query(statement)
        tables = str(sess.query("SHOW TABLES FROM mig_check", "CSV"))
    finally:
        sess.close()
    for name in ("labels", "alerts", "dead_letters"):
        assert f'"{name}"' in tables
