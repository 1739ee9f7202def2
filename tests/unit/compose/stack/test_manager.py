"""`stack up` refuses clearly, before starting anything: a port in use names its service, a missing
`java` is reported (ALTERNATE ports and a temp run dir; nothing needs to run)."""

from __future__ import annotations

import socket

import pytest

from driftline.compose.stack.manager import Stack
from driftline.compose.stack.process import StackError


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
