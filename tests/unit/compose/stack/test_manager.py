"""`stack up` refuses clearly, before starting anything: a port in use names its service, a missing
`java` is reported (ALTERNATE ports and a temp run dir; nothing needs to run)."""

from __future__ import annotations

import socket

import pytest

from driftline.apps.testing.harness import free_ports
from driftline.compose.stack.manager import Stack
from driftline.compose.stack.process import StackError
from driftline.settings import Settings


@pytest.fixture
def alt_settings(tmp_path, monkeypatch) -> Settings:
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


def test_port_in_use_is_reported_with_service_name(alt_settings):
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", alt_settings.clickhouse.port))
    blocker.listen()
    try:
        with pytest.raises(StackError, match=r"clickhouse: port \d+ \(native\).*in use"):
            Stack(alt_settings, only=["clickhouse"]).up()
    finally:
        blocker.close()
    assert not Stack(alt_settings).status()[1].running


def test_missing_java_is_reported(alt_settings, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(StackError, match=r"kafka: `java` not found"):
        Stack(alt_settings, only=["kafka"]).up()
