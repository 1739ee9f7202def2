"""A quick end-to-end check that the running stack does real work (used by ``make demo``).

Kafka: a message round-trips through a throw-away topic; ClickHouse: the driftline database holds
the core tables; Triton: the echo model loads and answers. Each step names what failed.
"""

from __future__ import annotations

import uuid

from driftline.clients import (
    PRODUCER_DURABILITY,
    clickhouse_client,
    explain_clickhouse_error,
    kafka_client_kwargs,
    triton_client,
)
from driftline.compose.stack.kafka import node_ports, stack_client_settings
from driftline.compose.stack.process import StackError
from driftline.compose.stack.util import run_coro
from driftline.settings import Settings, get_settings


async def _kafka_round_trip(settings: Settings, bootstrap: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"driftline.smoke.{uuid.uuid4().hex[:8]}"
    payload = uuid.uuid4().bytes
    kw = kafka_client_kwargs(settings, bootstrap=bootstrap)
    admin = AIOKafkaAdminClient(**kw)
    await admin.start()
    try:
        rf = settings.kafka.replication_factor
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=rf)])
        producer = AIOKafkaProducer(**{**kw, **PRODUCER_DURABILITY})
        await producer.start()
        try:
            await producer.send_and_wait(topic, payload)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, auto_offset_reset="earliest", **kw)
        await consumer.start()
        try:
            msg = await consumer.getone()
        finally:
            await consumer.stop()
        if msg.value != payload:
            raise StackError("kafka smoke: consumed a different message than produced")
    finally:
        await admin.delete_topics([topic])
        await admin.close()


def run_smoke(settings: Settings | None = None) -> list[str]:
    """Run the three checks; returns one line per passed check, raises StackError on the first failure."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    s = settings or get_settings()
    done = []
    try:
        local = stack_client_settings(s)
        nodes = range(1, s.kafka.nodes + 1)
        bootstrap = ",".join(f"127.0.0.1:{node_ports(s, i)[0]}" for i in nodes)
        run_coro(_kafka_round_trip(local, bootstrap), timeout=60)
    except StackError:
        raise
    except Exception as exc:
        raise StackError(f"kafka smoke failed: {type(exc).__name__}: {exc}") from exc
    done.append("kafka: produce/consume round-trip ok")

    ch = s.clickhouse
    client = clickhouse_client(s, database="default", host="127.0.0.1")
    try:
        tables = {r[0] for r in client.execute(f"SHOW TABLES FROM `{ch.database}`")}
    except Exception as exc:
        raise StackError(f"clickhouse smoke failed: {explain_clickhouse_error(exc, s)}") from exc
    finally:
        client.disconnect()
    missing = {"labels", "alerts", "dead_letters"} - tables
    if missing:
        raise StackError(f"clickhouse smoke: tables {sorted(missing)} missing in {ch.database}")
    done.append(f"clickhouse: {len(tables)} tables in {ch.database}")

    try:
        triton = triton_client(s, host="127.0.0.1")
        triton.load_model("echo")
        inp = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[b"driftline"]], dtype=np.object_))
        out = triton.infer("echo", [inp]).as_numpy("ECHO")
    except Exception as exc:
        raise StackError(f"triton smoke failed: {type(exc).__name__}: {exc}") from exc
    if out.ravel()[0] != b"driftline":
        raise StackError(f"triton smoke: echo answered {out!r}")
    done.append("triton: echo model loaded and answered")
    return done
