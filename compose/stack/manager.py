"""``driftline stack up|down|status|logs`` as library calls.

``up`` launches every stopped service at once (their start-ups overlap, which matters on two cores),
waits for each health check, then creates the Kafka topics and applies ClickHouse migrations. It is
idempotent: services already running are reported, not started twice, and only new migrations and
missing topics are applied. ``down`` stops only processes recorded in this run dir's pid files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from driftline.clients import clickhouse_client
from driftline.compose.stack.clickhouse import ClickHouseService
from driftline.compose.stack.kafka import KafkaService, ensure_topics
from driftline.compose.stack.process import StackError
from driftline.compose.stack.service import Service, ServiceStatus
from driftline.compose.stack.triton import TritonService
from driftline.schema import migrate as migrations
from driftline.settings import Settings, get_settings

SERVICE_NAMES = ("kafka", "clickhouse", "triton")

Reporter = Callable[[str], None]


@dataclass
class UpReport:
    """What ``Stack.up`` or ``init_remote`` did: services started or already running, topics, migrations."""

    started: list[str] = field(default_factory=list)
    already_running: list[str] = field(default_factory=list)
    topics_created: list[str] = field(default_factory=list)
    migrations: migrations.MigrationReport | None = None
    seconds: float = 0.0


class Stack:
    """The local services of one run dir (default ``<repo>/.run``), configured from settings."""

    def __init__(self, settings: Settings | None = None, only: Iterable[str] | None = None) -> None:
        self.settings = settings or get_settings()
        wanted = list(only) if only else list(SERVICE_NAMES)
        unknown = set(wanted) - set(SERVICE_NAMES)
        if unknown:
            raise StackError(f"unknown service(s) {sorted(unknown)}; choose from {list(SERVICE_NAMES)}")
        factories = {"kafka": KafkaService, "clickhouse": ClickHouseService, "triton": TritonService}
        self.services: list[Service] = [
            factories[name](self.settings) for name in SERVICE_NAMES if name in wanted
        ]

    def service(self, name: str) -> Service:
        """The service called ``name``; KeyError if this stack does not manage it."""
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(name)

    def up(self, report: Reporter = lambda _msg: None) -> UpReport:
        """Start what is stopped, wait until all are healthy, create topics, apply migrations (idempotent)."""
        t0 = time.monotonic()
        result = UpReport()
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        launched: list[Service] = []
        try:
            for svc in self.services:
                if svc.launch():
                    launched.append(svc)
                    result.started.append(svc.name)
                    report(f"{svc.name}: starting (log {svc.log_file})")
                else:
                    result.already_running.append(svc.name)
                    report(f"{svc.name}: already running (pid {svc.record().pid})")
            for svc in self.services:
                svc.wait_healthy()
                report(f"{svc.name}: healthy on {_ports(svc)}")
        except StackError:
            # leave nothing half-started behind: stop what this call launched
            for svc in launched:
                svc.stop()
            raise
        names = {svc.name for svc in self.services}
        if "kafka" in names:
            result.topics_created = ensure_topics(self.settings)
            report(f"kafka: topics ready ({len(result.topics_created)} created)")
        if "clickhouse" in names:
            ch = self.service("clickhouse")
            assert isinstance(ch, ClickHouseService)
            try:
                result.migrations = migrations.apply_migrations(ch.client, self.settings.clickhouse.database)
            except Exception as exc:
                raise StackError(f"clickhouse: applying migrations failed: {exc}") from exc
            m = result.migrations
            report(
                f"clickhouse: database {self.settings.clickhouse.database}: "
                f"{len(m.applied)} migration(s) applied, {len(m.skipped)} already applied"
            )
            for name in m.changed:
                report(f"clickhouse: WARNING migration {name} changed after it was applied (not re-run)")
        result.seconds = time.monotonic() - t0
        return result

    def down(self, report: Reporter = lambda _msg: None) -> list[str]:
        """Stop services in reverse start order; returns the names that were running."""
        stopped = []
        for svc in reversed(self.services):
            if svc.stop():
                stopped.append(svc.name)
                report(f"{svc.name}: stopped")
            else:
                report(f"{svc.name}: was not running")
        return stopped

    def status(self) -> list[ServiceStatus]:
        """A ServiceStatus per service (runs each health check)."""
        return [svc.status() for svc in self.services]

    def healthy(self) -> bool:
        """True if every service runs and passes its health check."""
        return all(s.healthy for s in self.status())


def init_remote(settings: Settings | None = None, report: Reporter = lambda _msg: None) -> UpReport:
    """Create topics and apply migrations on the services the settings point at (no local processes).

    Used by the ``init`` service of compose/docker-compose.yml and for externally run clusters.
    """
    settings = settings or get_settings()
    t0 = time.monotonic()
    result = UpReport()
    result.topics_created = ensure_topics(settings, settings.kafka.bootstrap)
    report(f"kafka {settings.kafka.bootstrap}: {len(result.topics_created)} topic(s) created")
    ch = settings.clickhouse

    def connect(database: str):
        return clickhouse_client(settings, database=database)

    try:
        result.migrations = migrations.apply_migrations(connect, ch.database)
    except Exception as exc:
        raise StackError(f"clickhouse {ch.host}:{ch.port}: applying migrations failed: {exc}") from exc
    report(f"clickhouse {ch.host}:{ch.port}: {len(result.migrations.applied)} migration(s) applied")
    result.seconds = time.monotonic() - t0
    return result


def _ports(svc: Service) -> str:
    return ", ".join(f"{label} {port}" for label, port in svc.ports.items())
