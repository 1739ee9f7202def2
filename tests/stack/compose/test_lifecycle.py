"""`stack up` twice then `down` on ALTERNATE ports and a temp run dir (the shared stack keeps running).

Starts a complete second stack, so it also proves a cold start works: storage formatting, config
generation, topic creation and every migration on a fresh ClickHouse 18.16.
"""

from __future__ import annotations

import time

import psutil
import pytest
import tritonclient.grpc as grpcclient

from driftline.compose.stack.manager import Stack
from driftline.compose.stack.process import port_open


def _all_ports(stack: Stack) -> list[int]:
    return [p for svc in stack.services for p in svc.ports.values()]


@pytest.mark.slow
def test_up_twice_then_down_leaves_nothing(alt_settings):
    stack = Stack(alt_settings)
    try:
        t0 = time.monotonic()
        first = stack.up()
        cold_s = time.monotonic() - t0
        assert sorted(first.started) == ["clickhouse", "kafka", "triton"]
        assert sorted(first.topics_created) == sorted(alt_settings.kafka.topics.all())
        assert first.migrations is not None and "0001_core.sql" in first.migrations.applied
        pids = {s.name: s.pid for s in stack.status()}
        assert all(pids.values())

        second = stack.up()
        assert second.started == [] and sorted(second.already_running) == ["clickhouse", "kafka", "triton"]
        assert second.topics_created == [] and second.migrations.applied == []
        assert {s.name: s.pid for s in stack.status()} == pids
        assert all(s.healthy and s.rss_bytes > 0 for s in stack.status())
        # a loaded python-backend model gives tritonserver stub children; down must end them too
        grpcclient.InferenceServerClient(f"127.0.0.1:{alt_settings.triton.grpc_port}").load_model("echo")
        children = psutil.Process(pids["triton"]).children(recursive=True)
        assert children, "echo model should run in a python stub process"
        pids.update({f"stub{c.pid}": c.pid for c in children})
        print(f"cold up {cold_s:.1f}s, warm up {second.seconds:.1f}s")
    finally:
        stopped = stack.down()
    assert sorted(stopped) == ["clickhouse", "kafka", "triton"]
    for pid in pids.values():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not [p for p in _all_ports(stack) if port_open("127.0.0.1", p)]
    assert all(not s.running for s in stack.status())
    assert stack.down() == []  # a second down is a no-op
