"""``driftline stack up|down|status|logs`` as library calls.

``up`` starts stopped services in parallel, waits for health, then creates topics and applies migrations
(idempotent); ``down`` stops only processes recorded in this run dir's pid files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from driftline.clients import clickhouse_client
from driftline.compose.stack.clickhouse import ClickHouseService
from driftline.compose.stack.kafka import (
    KafkaService,
    ensure_topics,
    kafka_services,
    recorded_kafka_services,
)
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
        factories = {
            "kafka": kafka_services,  # one service per node (DRIFTLINE_KAFKA__NODES)
            "clickhouse": lambda s: [ClickHouseService(s)],
            "triton": lambda s: [TritonService(s)],
        }
        self.services: list[Service] = [
            svc for name in SERVICE_NAMES if name in wanted for svc in factories[name](self.settings)
        ]

    def service(self, name: str) -> Service:
        """The service called ``name`` (``kafka``, or ``kafka-<i>`` in a cluster); KeyError if not managed."""
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
            # concurrently: preparing (formatting Kafka storage, a JVM each) overlaps across services
            with ThreadPoolExecutor(max_workers=len(self.services) or 1) as pool:
                futures = [pool.submit(svc.launch) for svc in self.services]
                wait(futures)
            errors = [f.exception() for f in futures if f.exception() is not None]
            for svc, future in zip(self.services, futures, strict=True):
                if future.exception() is not None:
                    continue
                if future.result():
                    launched.append(svc)
                    result.started.append(svc.name)
                    report(f"{svc.name}: starting (log {svc.log_file})")
                else:
                    result.already_running.append(svc.name)
                    report(f"{svc.name}: already running (pid {svc.record().pid})")
            if errors:
                raise errors[0]
            for svc in self.services:
                svc.wait_healthy()
                report(f"{svc.name}: healthy on {_ports(svc)}")
        except StackError:
            # leave nothing half-started behind: stop what this call launched
            for svc in launched:
                svc.stop()
            raise
        names = {svc.name for svc in self.services}
        if any(isinstance(svc, KafkaService) for svc in self.services):
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
        """Stop services in reverse start order; returns the names that were running.

        Kafka nodes recorded in this run dir are stopped too when the settings name another node
        count (``stack down`` after ``stack up --cluster``).
        """
        stopped = []
        services = list(self.services)
        if any(isinstance(svc, KafkaService) for svc in services):
            known = {svc.pid_file for svc in services}
            extra = [svc for svc in recorded_kafka_services(self.settings) if svc.pid_file not in known]
            services[:0] = extra
        # concurrently: a Kafka cluster stopped one node at a time keeps re-electing controllers
        with ThreadPoolExecutor(max_workers=len(services) or 1) as pool:
            outcomes = list(pool.map(lambda svc: svc.stop(), reversed(services)))
        for svc, was_running in zip(reversed(services), outcomes, strict=True):
            if was_running:
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
