"""Shared fixtures for every area's tests.

Tests marked ``@pytest.mark.stack`` talk to the real local stack (``driftline stack up``). If the
stack is down they fail at once with one clear message instead of each timing out on its own.
Parallel runs share the stack, so tests name their topics / models / rows with ``unique_suffix()``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

from compose.settings import Settings, get_settings
from compose.stack.process import port_open


def unique_suffix(prefix: str = "") -> str:
    """A short collision-free name part (valid in Kafka topics, ClickHouse and Triton names)."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


_STACK_PROBLEM: list[str | None] = []


def _stack_problem(s: Settings) -> str | None:
    """Which service of the shared stack is unreachable (cached for the session), or None."""
    if not _STACK_PROBLEM:
        checks = {
            f"Kafka {s.kafka.host}:{s.kafka.port}": (s.kafka.host, s.kafka.port),
            f"ClickHouse {s.clickhouse.host}:{s.clickhouse.port}": (s.clickhouse.host, s.clickhouse.port),
            f"Triton gRPC {s.triton.grpc_url}": (s.triton.host, s.triton.grpc_port),
            f"Triton HTTP {s.triton.http_url}": (s.triton.host, s.triton.http_port),
        }
        down = [name for name, (host, port) in checks.items() if not port_open(host, port, timeout=1.0)]
        _STACK_PROBLEM.append(
            None
            if not down
            else f"local stack is not running ({', '.join(down)} unreachable); "
            "start it with `driftline stack up`"
        )
    return _STACK_PROBLEM[0]


@pytest.fixture(autouse=True)
def _require_stack(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("stack") is None:
        return
    problem = _stack_problem(get_settings())
    if problem:
        pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="session")
def kafka_bootstrap(settings: Settings) -> str:
    return settings.kafka.bootstrap


@pytest.fixture(scope="session")
def triton_grpc_url(settings: Settings) -> str:
    return settings.triton.grpc_url


@pytest.fixture
def ch(settings: Settings) -> Iterator[object]:
    """clickhouse-driver Client on the driftline database (migrations already applied by ``stack up``)."""
    from compose.clients import clickhouse_client

    client = clickhouse_client(settings)
    try:
        yield client
    finally:
        client.disconnect()


@contextlib.contextmanager
def migrated_database(settings: Settings, prefix: str) -> Iterator[object]:
    """A throwaway ClickHouse database with every migration applied, dropped afterwards.

    For tests that need the real schema without touching the shared ``driftline`` database.
    """
    from compose.clients import clickhouse_client
    from compose.stack.migrations import apply_migrations

    name = unique_suffix(prefix)
    apply_migrations(lambda database: clickhouse_client(settings, database=database), name)
    client = clickhouse_client(settings, database=name)
    try:
        yield client
    finally:
        client.execute(f"DROP DATABASE IF EXISTS `{name}`")
        client.disconnect()
