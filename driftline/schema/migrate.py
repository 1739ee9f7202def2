"""ClickHouse schema migrations: numbered ``driftline/schema/migrations/*.sql`` files applied in order.

Applied files are recorded in ``schema_migrations``, so ``driftline stack up`` applies only new ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class MigrationError(RuntimeError):
    """A migration statement was rejected; the message names the file and statement."""


MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

SCHEMA_MIGRATIONS_DDL = """CREATE TABLE IF NOT EXISTS schema_migrations
(
    name String,
    checksum String,
    applied_at DateTime
)
ENGINE = MergeTree
ORDER BY name"""


@dataclass(frozen=True)
class Migration:
    """One numbered ``.sql`` file of the migrations folder."""

    name: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text: an applied file edited later is reported as changed."""
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        """The file's statements, in order."""
        return split_statements(self.sql)


@dataclass
class MigrationReport:
    """What one run of ``apply_migrations`` did, by file name."""

    applied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # applied earlier, file edited since


def split_statements(sql: str) -> list[str]:
    """Split on ``;`` at end of line; whole-line ``--`` comments are dropped."""
    statements: list[str] = []
    current: list[str] = []
    for line in sql.splitlines():
        if line.strip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            text = "\n".join(current).strip().removesuffix(";").strip()
            if text:
                statements.append(text)
            current = []
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return statements


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All migration files, sorted by name (the numeric prefix gives the order)."""
    return [Migration(p.name, p, p.read_text()) for p in sorted(directory.glob("*.sql"))]


def apply_migrations(
    connect: Callable[[str], Any], database: str, directory: Path = MIGRATIONS_DIR
) -> MigrationReport:
    """Apply pending migrations. ``connect(db)`` returns a clickhouse-driver ``Client`` on ``db``.

    Statements run with ``database`` as the client's default database, so migration files use
    unqualified table names and work under any database name (tests use their own).
    """
    report = MigrationReport()
    bootstrap = connect("default")
    try:
        bootstrap.execute(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    finally:
        bootstrap.disconnect()
    client = connect(database)
    try:
        client.execute(SCHEMA_MIGRATIONS_DDL)
        done = dict(client.execute("SELECT name, checksum FROM schema_migrations"))
        for migration in discover(directory):
            if migration.name in done:
                bucket = report.changed if done[migration.name] != migration.checksum else report.skipped
                bucket.append(migration.name)
                continue
            for statement in migration.statements():
                try:
                    client.execute(statement)
                except Exception as exc:
                    reason = str(exc).split("Stack trace:")[0].strip()  # 18.16 appends a C++ trace
                    raise MigrationError(
                        f"{migration.name}: {type(exc).__name__}: {reason}\nstatement:\n{statement}"
                    ) from exc
            client.execute(
                "INSERT INTO schema_migrations (name, checksum, applied_at) VALUES",
                [(migration.name, migration.checksum, _now())],
            )
            report.applied.append(migration.name)
    finally:
        client.disconnect()
    return report


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)
