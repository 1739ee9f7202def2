"""A hole is redelivered by the running worker: the checkpoint's seek back, on a real Faust consumer.

``hole_app.py`` (a subprocess, real Kafka) relays ten values and passes over offset 3 the first time,
as Faust does with a message it skips. The gate alone would keep offsets 3..9 uncommitted forever
(the running consumer never reads offset 3 again); the checkpoint's hole check must seek back so
that all ten values are relayed, offset 3 included, and the group's committed offset reaches 10.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from driftline.apps.testing.harness import stop_process, unique_suffix
from driftline.clients import kafka_consumer, kafka_producer
from driftline.kafka_admin import create_missing_topics
from driftline.settings import get_settings

pytestmark = pytest.mark.stack

N, HOLE, AFTER_S = 10, 3, 2.0


async def _relayed(topic: str, want: int, timeout_s: float) -> list[bytes]:
    consumer = kafka_consumer(topic, settings=get_settings(), auto_offset_reset="earliest",
                              group_id=unique_suffix("hole-read-"))  # fmt: skip
    await consumer.start()
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(set(got)) < want and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            got.extend(m.value for messages in batches.values() for m in messages)
    finally:
        await consumer.stop()
    return got


async def _committed(group: str, topic: str) -> int | None:
    consumer = kafka_consumer(settings=get_settings(), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(topic, 0))
    finally:
        await consumer.stop()


async def test_a_passed_over_offset_is_sought_back_and_committed(tmp_path: Path) -> None:
    settings = get_settings()
    src, dst, app_id = unique_suffix("hole.in."), unique_suffix("hole.out."), unique_suffix("hole-app-")
    await create_missing_topics(settings, [src, dst], partitions=1)
    producer = kafka_producer(settings)
    await producer.start()
    try:
        for i in range(N):
            await producer.send_and_wait(src, f"v{i}".encode(), key=f"k{i}".encode())
    finally:
        await producer.stop()
    env = {**os.environ, "HOLE_APP_ID": app_id, "HOLE_IN": src, "HOLE_OUT": dst, "HOLE_OFFSET": str(HOLE),
           "HOLE_AFTER_S": str(AFTER_S), "HOLE_DATADIR": str(tmp_path / "faust")}  # fmt: skip
    log_path = tmp_path / "hole_app.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("hole_app.py")), "worker", "-l", "info"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            got = await _relayed(dst, N, timeout_s=120)
            committed = None
            for _ in range(40):  # the commit interval is 0.5 s
                committed = await _committed(app_id, src)
                if committed == N:
                    break
                await asyncio.sleep(0.5)
        finally:
            stop_process(worker)
    logs = log_path.read_text(errors="replace")
    assert set(got) == {f"v{i}".encode() for i in range(N)}, (sorted(set(got)), logs[-3000:])
    assert "redelivering a hole" in logs
    assert committed == N, (committed, logs[-3000:])
