"""A one-agent Faust app for the hole test: relays raw values from one topic to another, once.

It passes over one offset the first time it sees it (``HOLE_OFFSET``), the way Faust skips a message
during a rebalance: never begun, acked by the stream. The driftline ``Checkpoint`` is installed as in
a pipeline worker, so that offset is never committed past, and its hole check must seek back to it
after ``HOLE_AFTER_S`` for the value ever to be relayed. Run as ``python hole_app.py worker``.
"""

from __future__ import annotations

import os

import faust

from driftline.clients import faust_broker_credentials
from driftline.settings import get_settings
from driftline.streams.app import broker_url
from driftline.streams.checkpoint import Checkpoint

settings = get_settings()
app = faust.App(
    os.environ["HOLE_APP_ID"],
    broker=broker_url(settings),
    broker_credentials=faust_broker_credentials(settings),
    store="memory://",
    datadir=os.environ["HOLE_DATADIR"],
    web_enabled=False,
    topic_partitions=1,
    consumer_auto_offset_reset="earliest",
    broker_commit_interval=0.5,
)
source = app.topic(os.environ["HOLE_IN"], value_serializer="raw", key_serializer="raw", partitions=1)
sink = app.topic(os.environ["HOLE_OUT"], value_serializer="raw", key_serializer="raw", partitions=1)
checkpoint = Checkpoint([source.get_topic_name()], redeliver_after_s=float(os.environ["HOLE_AFTER_S"]))
checkpoint.install(app)
HOLE = int(os.environ["HOLE_OFFSET"])
passed_over: set[int] = set()


@app.agent(source)
async def relay(stream):
    async for events in stream.take_events(100, within=0.3):
        kept = []
        for event in events:
            if event.message.offset == HOLE and HOLE not in passed_over:
                passed_over.add(HOLE)
                continue
            kept.append(event)
        async with checkpoint.batch([e.message for e in kept]):
            pending = [await sink.send(value=e.value, force=True) for e in kept]
            await Checkpoint.produced(pending)


if __name__ == "__main__":
    app.main()
