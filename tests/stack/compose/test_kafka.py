"""Kafka on the shared stack: plain aiokafka produce/consume and a Faust agent round-trip."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from driftline.apps.testing.harness import stop_process, unique_suffix

pytestmark = pytest.mark.stack


async def _create(bootstrap: str, *names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, num_partitions=1, replication_factor=1) for n in names])
    finally:
        await admin.close()


async def _delete(bootstrap: str, *names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(list(names))
    finally:
        await admin.close()


async def _consume(bootstrap: str, topic: str, count: int, timeout_s: float) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=unique_suffix("t-")
    )
    await consumer.start()
    got: list[bytes] = []
    try:
        async with asyncio.timeout(timeout_s):
            async for msg in consumer:
                got.append(msg.value)
                if len(got) >= count:
                    break
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return got


async def test_stack_topics_exist(settings, kafka_bootstrap):
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        topics = set(await admin.list_topics())
    finally:
        await admin.close()
    assert set(settings.kafka.topics.all()) <= topics


async def test_produce_consume(kafka_bootstrap):
    topic = unique_suffix("test.pc.")
    await _create(kafka_bootstrap, topic)
    payloads = [f"msg-{i}".encode() for i in range(20)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for p in payloads:
            await producer.send(topic, p, key=b"k")
        await producer.flush()
    finally:
        await producer.stop()
    try:
        assert await _consume(kafka_bootstrap, topic, len(payloads), 30) == payloads
    finally:
        await _delete(kafka_bootstrap, topic)


@pytest.mark.slow
async def test_faust_agent_round_trip(kafka_bootstrap, tmp_path: Path):
    suffix = unique_suffix()
    src, dst = f"test.faust.in.{suffix}", f"test.faust.out.{suffix}"
    await _create(kafka_bootstrap, src, dst)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for word in (b"alpha", b"beta", b"gamma"):
            await producer.send_and_wait(src, word)
    finally:
        await producer.stop()
    env = {
        **os.environ,
        "RT_APP_ID": f"test-faust-{suffix}",
        "RT_BOOTSTRAP": kafka_bootstrap,
        "RT_IN": src,
        "RT_OUT": dst,
        "RT_DATADIR": str(tmp_path / "faust"),
    }
    app_file = Path(__file__).with_name("faust_roundtrip_app.py")
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, str(app_file), "worker", "-l", "info"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        got = await _consume(kafka_bootstrap, dst, 3, 120)
    finally:
        stop_process(worker)
        log.close()
        await _delete(kafka_bootstrap, src, dst)
    assert got == [b"ALPHA", b"BETA", b"GAMMA"], (tmp_path / "worker.log").read_text()[-3000:]
