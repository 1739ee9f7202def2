"""Shared fixtures for every tree's tests.

Three trees mirror the packages (``tests/<tree>/<package path>/test_<module>.py``, the ground floor
under ``driftline/``): ``unit`` needs nothing running and takes about a minute; ``slow`` needs no
services but trains, exports or measures real models; ``stack`` needs the live stack or starts real
services. Helpers they share live in ``tests/support``.

Tests marked ``@pytest.mark.stack`` talk to the real local stack (``driftline stack up``). If the
stack is down they fail at once with one clear message instead of each timing out on its own.
Parallel runs share the stack, so tests name their topics / models / rows with ``unique_suffix()``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.apps.testing.harness import free_ports, unique_suffix
from driftline.compose.stack.process import port_open
from driftline.settings import Settings, get_settings

# Exports in tests (and the workers, updaters and demos they start) choose an engine by the same rule
# on a small held-out sample among two candidates; every engine is measured by tests/slow/models/
# engines/test_prepare.py, and full-size measurements are the benchmarks' job (bench.models_bench).
os.environ.setdefault("DRIFTLINE_TRITON__ENGINE_SELECTION_TEXTS", "48")
os.environ.setdefault("DRIFTLINE_TRITON__ENGINE_CANDIDATES", "ort-fp32,ort-int8")

#: tests/<tree>/<folder> -> the floor it tests (``pytest -m streams`` runs one floor in every tree);
#: tests/<tree>/driftline and the files directly in tests/unit test the ground floor. Trees: unit (no
#: services, seconds), slow (no services; trains, exports or measures real models), stack (live stack)
TREES = ("unit", "slow", "stack")
FLOORS = {"compose": "compose", "models": "models", "online": "online", "streams": "streams",
          "apps": "apps", "driftline": "ground", "reliability": "reliability", "bench": "bench"}  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its floor, taken from the folder it sits in (tests mirror the packages)."""
    root = Path(__file__).resolve().parent
    for item in items:
        parts = item.path.resolve().relative_to(root).parts
        if parts[0] in TREES:
            parts = parts[1:]
        floor = FLOORS.get(parts[0], "ground") if len(parts) > 1 else "ground"
        item.add_marker(floor)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop at once when the environment's driftline is another checkout than these tests.

    The stack CLI, workers and the demo run from the installed package; the tests import the
    checkout. If the two differ (a venv shared with another clone), Triton serves one
    ``triton_repo/`` while tests export into the other and every load fails with "failed to poll
    from model repository" -- this names the cause instead.
    """
    here = Path(__file__).resolve().parent.parent
    probe = "import driftline.settings as s; print(s.REPO_ROOT)"
    found = subprocess.run([sys.executable, "-c", probe], cwd="/", capture_output=True, text=True)
    installed = found.stdout.strip()
    if found.returncode != 0 or Path(installed) != here:
        raise pytest.UsageError(
            f"the environment's driftline is installed from {installed or found.stderr.strip()!r}, "
            f"not from this checkout {here}; run `bash compose/setup.sh` (or `make test`) here first"
        )


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


@pytest.fixture(scope="module")
def news_artifact() -> Path:
    """``news_topic``'s tiny trained artifact (``serving_support.small_artifact``), for every tree."""
    from tests.support.serving_support import small_artifact

    return small_artifact("news_topic")  # minilm loads fastest; CJK through e5 is exercised by the bench


@pytest.fixture(scope="session")
def kafka_bootstrap(settings: Settings) -> str:
    return settings.kafka.bootstrap


@pytest.fixture(scope="session")
def triton_grpc_url(settings: Settings) -> str:
    return settings.triton.grpc_url


@pytest.fixture
def ch(settings: Settings) -> Iterator[object]:
    """clickhouse-driver Client on the driftline database (migrations already applied by ``stack up``)."""
    from driftline.clients import clickhouse_client

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
    from driftline.clients import clickhouse_client
    from driftline.schema.migrate import apply_migrations

    name = unique_suffix(prefix)
    apply_migrations(lambda database: clickhouse_client(settings, database=database), name)
    client = clickhouse_client(settings, database=name)
    try:
        yield client
    finally:
        client.execute(f"DROP DATABASE IF EXISTS `{name}`")
        client.disconnect()


@pytest.fixture
def alt_settings(tmp_path, monkeypatch) -> Settings:
    """Settings of a second stack: every service on a free port, a private run dir."""
    names = [
        "KAFKA__PORT", "KAFKA__CONTROLLER_PORT", "CLICKHOUSE__PORT", "CLICKHOUSE__HTTP_PORT",
        "TRITON__HTTP_PORT", "TRITON__GRPC_PORT", "TRITON__METRICS_PORT",
    ]  # fmt: skip
    for name, port in zip(names, free_ports(len(names)), strict=True):
        monkeypatch.setenv(f"DRIFTLINE_{name}", str(port))
    monkeypatch.delenv("DRIFTLINE_KAFKA__BOOTSTRAP", raising=False)
    monkeypatch.setenv("DRIFTLINE_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("DRIFTLINE_TRITON__EXIT_TIMEOUT_S", "5")
    return Settings()
