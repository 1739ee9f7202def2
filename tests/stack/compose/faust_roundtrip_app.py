"""A one-agent Faust app for the stack round-trip test: upper-cases bytes from one topic into another.

Run as a subprocess (``python faust_roundtrip_app.py worker``) with RT_* variables naming a unique
app id and topics, so parallel test runs never share a consumer group. Security, replication and
the producer's durability come from the driftline settings in its environment, exactly as a
pipeline worker gets them (the cluster test runs it against SASL_SSL-only brokers).
"""

from __future__ import annotations

import os

import faust

from driftline.clients import faust_broker_credentials
from driftline.settings import get_settings
from driftline.streams.faust_compat import install_durable_producer

settings = get_settings()
app = faust.App(
    os.environ["RT_APP_ID"],
    broker=";".join(f"kafka://{hp}" for hp in os.environ["RT_BOOTSTRAP"].split(",")),
    broker_credentials=faust_broker_credentials(settings),
    topic_replication_factor=settings.kafka.replication_factor,
    producer_acks=-1,
    store="memory://",
    datadir=os.environ["RT_DATADIR"],
    web_enabled=False,
    topic_partitions=1,
    consumer_auto_offset_reset="earliest",
)
install_durable_producer(app)
source = app.topic(os.environ["RT_IN"], value_serializer="raw", partitions=1)
sink = app.topic(os.environ["RT_OUT"], value_serializer="raw", partitions=1)


@app.agent(source)
async def upper(stream):
    async for value in stream:
        await sink.send(value=value.upper())


if __name__ == "__main__":
    app.main()
