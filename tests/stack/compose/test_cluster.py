"""The three-broker TLS rehearsal: ``driftline stack up --cluster`` on free ports with its own run dir.

One cluster (KRaft, three broker+controller nodes, SASL_SSL with SCRAM on every client and
inter-broker listener, a CA made by the stack) is started through the real CLI for the module and
stopped afterwards. The tests prove that (a) only SASL_SSL is spoken, driftline's client factory and
a Faust app round-trip messages with ``acks=all``, and topics get RF 3 / ``min.insync.replicas`` 2;
(b) a wrong CA or a wrong password fails at once with a message naming the setting to fix; (c) a
broker killed with SIGKILL under steady load and restarted loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError

from driftline.apps.testing.cluster import KAFKA_SECRET, NODES, Cluster, start_cluster
from driftline.apps.testing.harness import settings_for
from driftline.clients import (
    KafkaAuthError,
    KafkaTLSError,
    check_kafka,
    kafka_client_kwargs,
    kafka_consumer,
    kafka_producer,
    kafka_producer_kwargs,
)
from driftline.compose.stack.kafka import ensure_certificates, node_ports, stack_ca_file
from driftline.compose.stack.manager import Stack
from driftline.kafka_admin import create_missing_topics
from driftline.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with start_cluster(tmp_path_factory.mktemp("cluster") / "run") as running:
        yield running


def _with(cluster: Cluster, **overrides: str) -> Settings:
    return settings_for({**cluster.env, **{f"DRIFTLINE_KAFKA__{k.upper()}": v for k, v in overrides.items()}})


# --- (a) the cluster ----------------------------------------------------------------------------


def test_cluster_has_three_sasl_ssl_brokers_and_prints_the_client_environment(cluster: Cluster) -> None:
    kafka = cluster.settings.kafka
    print(f"cluster up in {cluster.up_seconds:.1f}s")
    assert (kafka.nodes, kafka.security_protocol) == (NODES, "SASL_SSL")
    assert (kafka.replication_factor, kafka.min_insync_replicas) == (3, 2)
    assert kafka.ssl_cafile == stack_ca_file(cluster.settings) and kafka.ssl_cafile.is_file()
    ports = [node_ports(cluster.settings, i)[0] for i in range(1, NODES + 1)]
    assert kafka.bootstrap == ",".join(f"127.0.0.1:{p}" for p in ports)

    async def brokers() -> dict[int, int]:
        from aiokafka import AIOKafkaClient

        client = AIOKafkaClient(**kafka_client_kwargs(cluster.settings))
        await client.bootstrap()
        try:
            metadata = await client.fetch_all_metadata()
            return {b.nodeId: b.port for b in metadata.brokers()}
        finally:
            await client.close()

    assert asyncio.run(brokers()) == {i + 1: port for i, port in enumerate(ports)}
    statuses = Stack(cluster.settings, only=["kafka"]).status()
    assert [s.name for s in statuses] == ["kafka-1", "kafka-2", "kafka-3"]
    assert all(s.healthy for s in statuses), [s.detail for s in statuses]


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_every_listener_speaks_only_sasl_ssl(cluster: Cluster, protocol: str) -> None:
    for node in range(1, NODES + 1):
        port, controller = node_ports(cluster.settings, node)
        for p in (port, controller):
            plain = _with(cluster, security_protocol=protocol, bootstrap=f"127.0.0.1:{p}")
            with pytest.raises((KafkaError, OSError, TimeoutError)):  # closed connection or timeout
                asyncio.run(check_kafka(plain, timeout_s=5))
    # and TLS without SASL is refused by the client listener too
    client_port = node_ports(cluster.settings, 1)[0]
    no_sasl = _with(cluster, security_protocol="SSL", bootstrap=f"127.0.0.1:{client_port}")

    async def metadata() -> None:  # ApiVersions is answered before SASL; metadata is not
        from aiokafka import AIOKafkaClient

        client = AIOKafkaClient(**kafka_client_kwargs(no_sasl, request_timeout_ms=5000))
        try:
            await asyncio.wait_for(client.bootstrap(), 20)
        finally:
            await client.close()

    with pytest.raises((KafkaError, OSError, TimeoutError)):
        asyncio.run(metadata())


def _describe(settings: Settings, topics: list[str]) -> dict[str, tuple[list[int], str]]:
    """``{topic: (replica count per partition, min.insync.replicas)}``."""

    async def run() -> dict[str, tuple[list[int], str]]:
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings))
        await admin.start()
        try:
            described = await admin.describe_topics(topics)
            replicas = {t["topic"]: [len(p["replicas"]) for p in t["partitions"]] for t in described}
            configs = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
            )
            isr = {}
            for response in configs:
                for _code, _msg, _type, name, entries in response.resources:
                    isr[name] = next(e[1] for e in entries if e[0] == "min.insync.replicas")
            return {t: (replicas[t], isr[t]) for t in topics}
        finally:
            await admin.close()

    return asyncio.run(run())


def test_stack_topics_have_rf3_and_min_insync_2(cluster: Cluster) -> None:
    topics = cluster.settings.kafka.topics.all()
    described = _describe(cluster.settings, topics)
    partitions = cluster.settings.kafka.partitions
    assert described == {t: ([3] * partitions, "2") for t in topics}


async def _round_trip(settings: Settings, topic: str, count: int) -> list[bytes]:
    await create_missing_topics(settings, [topic], partitions=2)
    producer = kafka_producer(settings, linger_ms=5)
    await producer.start()
    try:
        sent = [f"m-{i}".encode() for i in range(count)]
        results = await asyncio.gather(*[await producer.send(topic, v) for v in sent])
        assert all(r.offset >= 0 for r in results)
    finally:
        await producer.stop()
    consumer = kafka_consumer(topic, settings=settings, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + 60
        while len(got) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            got += [m.value for msgs in batch.values() for m in msgs]
    finally:
        await consumer.stop()
    return got


def test_client_factory_round_trip_with_acks_all(cluster: Cluster) -> None:
    kw = kafka_producer_kwargs(cluster.settings)
    assert (kw["acks"], kw["enable_idempotence"], kw["security_protocol"]) == ("all", True, "SASL_SSL")
    topic = f"cluster.rt.{uuid.uuid4().hex[:8]}"
    got = asyncio.run(_round_trip(cluster.settings, topic, 200))
    assert sorted(got) == sorted(f"m-{i}".encode() for i in range(200))
    assert _describe(cluster.settings, [topic]) == {topic: ([3, 3], "2")}


def test_faust_app_round_trips_over_sasl_ssl(cluster: Cluster, tmp_path: Path) -> None:
    """A Faust worker with driftline's credentials works against SSL-only listeners: it really speaks TLS."""
    suffix = uuid.uuid4().hex[:8]
    src, dst = f"cluster.faust.in.{suffix}", f"cluster.faust.out.{suffix}"
    settings = cluster.settings

    async def prepare() -> None:
        await create_missing_topics(settings, [src, dst], partitions=1)
        producer = kafka_producer(settings)
        await producer.start()
        try:
            for value in (b"alpha", b"beta", b"gamma"):
                await producer.send_and_wait(src, value)
        finally:
            await producer.stop()

    asyncio.run(prepare())
    env = {
        **cluster.env,
        "RT_APP_ID": f"cluster-faust-{suffix}",
        "RT_BOOTSTRAP": settings.kafka.bootstrap,
        "RT_IN": src,
        "RT_OUT": dst,
        "RT_DATADIR": str(tmp_path / "faust"),
    }
    app_file = Path(__file__).with_name("faust_roundtrip_app.py")
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, str(app_file), "worker", "-l", "info"],
            env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:

            async def consume() -> list[bytes]:
                consumer = kafka_consumer(dst, settings=settings, auto_offset_reset="earliest", group_id=None)
                await consumer.start()
                got: list[bytes] = []
                try:
                    deadline = time.monotonic() + 120
                    while len(got) < 3 and time.monotonic() < deadline and worker.poll() is None:
                        batch = await consumer.getmany(timeout_ms=1000)
                        got += [m.value for msgs in batch.values() for m in msgs]
                finally:
                    await consumer.stop()
                return got

            got = asyncio.run(consume())
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
    text = log_path.read_text(errors="replace")
    assert got == [b"ALPHA", b"BETA", b"GAMMA"], text[-3000:]
    assert KAFKA_SECRET not in text
    # Faust's own topics (the assignor's leader topic) were created with the configured RF 3
    leader = f"cluster-faust-{suffix}-__assignor-__leader"
    assert _describe(settings, [leader])[leader][0] == [3]


# --- (b) clear errors ---------------------------------------------------------------------------


def test_wrong_ca_is_a_clear_error_naming_the_setting(cluster: Cluster, tmp_path: Path) -> None:
    other = settings_for({**cluster.env, "DRIFTLINE_RUN_DIR": str(tmp_path / "other")})
    ensure_certificates(other, 1)  # a second, unrelated CA
    wrong = _with(cluster, ssl_cafile=str(stack_ca_file(other)))
    with pytest.raises(KafkaTLSError) as info:
        asyncio.run(check_kafka(wrong))
    message = str(info.value)
    assert "DRIFTLINE_KAFKA__SSL_CAFILE" in message and "not verified" in message, message
    # a CA file that does not exist fails before any connection, naming the setting too
    with pytest.raises(KafkaTLSError, match="DRIFTLINE_KAFKA__SSL_CAFILE"):
        kafka_client_kwargs(_with(cluster, ssl_cafile=str(tmp_path / "missing.pem")))
    # the stack's health check reports the same instead of waiting
    (status, *_) = Stack(wrong, only=["kafka"]).status()
    assert status.running and not status.healthy and "DRIFTLINE_KAFKA__SSL_CAFILE" in status.detail


def test_wrong_password_is_a_clear_error_naming_the_sasl_settings(cluster: Cluster) -> None:
    wrong = _with(cluster, sasl_password="not-the-password")
    with pytest.raises(KafkaAuthError) as info:
        asyncio.run(check_kafka(wrong))
    message = str(info.value)
    assert not isinstance(info.value, KafkaTLSError)
    assert "authentication failed for user 'driftline'" in message
    assert "DRIFTLINE_KAFKA__SASL_PASSWORD" in message and "not-the-password" not in message
    asyncio.run(check_kafka(cluster.settings))  # the right settings pass the same check


# --- (c) a broker dies under load -----------------------------------------------------------------


def test_sigkill_one_broker_under_load_loses_nothing(cluster: Cluster) -> None:
    """Steady acks=all produce/consume; SIGKILL node 1 (first bootstrap node), restart it; all ids arrive."""
    settings = cluster.settings
    topic = f"cluster.kill.{uuid.uuid4().hex[:8]}"
    stack = Stack(settings, only=["kafka"])
    victim = stack.service("kafka-1")
    produced: list[str] = []
    consumed: set[str] = set()
    timeline: dict[str, float] = {}

    async def run() -> None:
        await create_missing_topics(settings, [topic], partitions=4)
        producer = kafka_producer(settings, linger_ms=5, request_timeout_ms=30000)
        consumer = kafka_consumer(topic, settings=settings, auto_offset_reset="earliest", group_id=None)
        await producer.start()
        await consumer.start()
        stop_consuming = asyncio.Event()

        async def consume() -> None:
            while not stop_consuming.is_set():
                batch = await consumer.getmany(timeout_ms=500)
                consumed.update(m.value.decode() for msgs in batch.values() for m in msgs)

        async def produce(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                ids = [uuid.uuid4().hex for _ in range(20)]
                futures = [await producer.send(topic, i.encode(), key=i.encode()) for i in ids]
                await asyncio.gather(*futures)  # raises if any write was not acknowledged by the ISR
                produced.extend(ids)
                await asyncio.sleep(0.05)

        reader = asyncio.create_task(consume())
        try:
            await produce(3)
            record = victim.record()
            assert record is not None
            os.kill(record.pid, signal.SIGKILL)
            timeline["killed"] = time.monotonic()
            await produce(5)  # two of three replicas left: min.insync 2 still accepts acks=all
            restart = asyncio.get_running_loop().run_in_executor(None, stack.up)
            while not restart.done():
                await produce(1)
            await restart
            timeline["restarted"] = time.monotonic()
            await produce(3)
            deadline = time.monotonic() + 60
            while set(produced) - consumed and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
        finally:
            stop_consuming.set()
            await reader
            await consumer.stop()
            await producer.stop()

    asyncio.run(asyncio.wait_for(run(), 300))
    print(f"produced {len(produced)}, restart took {timeline['restarted'] - timeline['killed']:.1f}s")
    assert len(produced) > 200
    missing = set(produced) - consumed
    assert not missing, f"{len(missing)} of {len(produced)} acknowledged ids never consumed"
    assert len(set(produced)) == len(produced)
    assert all(s.healthy for s in stack.status())
