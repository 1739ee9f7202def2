"""A one-agent Faust app for the stack round-trip test: upper-cases bytes from one topic into another.

Run as a subprocess (``python faust_roundtrip_app.py worker``) with RT_* variables naming a unique
app id and topics, so parallel test runs never share a consumer group.
"""

from __future__ import annotations

import os

import faust

app = faust.App(
    os.environ["RT_APP_ID"],
    broker=f"kafka://{os.environ['RT_BOOTSTRAP']}",
    store="memory://",
    datadir=os.environ["RT_DATADIR"],
    web_enabled=False,
    topic_partitions=1,
    consumer_auto_offset_reset="earliest",
)
source = app.topic(os.environ["RT_IN"], value_serializer="raw", partitions=1)
sink = app.topic(os.environ["RT_OUT"], value_serializer="raw", partitions=1)


@app.agent(source)
async def upper(stream):
    async for value in stream:
        await sink.send(value=value.upper())


if __name__ == "__main__":
    app.main()
