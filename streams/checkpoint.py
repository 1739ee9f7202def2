"""The commit rule in one object: an input offset is committed only after its outputs are durable.

Modelled on Quix Streams' ``Checkpoint``. A worker's input message moves through three steps, in
this order, and only the last one makes its offset part of a Kafka commit:

1. **flush the sinks** - its rows are durably in ClickHouse (``BatchingSink`` runs the ``hold``
   release callback only after the insert succeeded);
2. **produce** - every message it caused (predictions, dead letters) was acked by Kafka
   (``produced``);
3. **commit** - the message is marked done, Faust acks it, and Faust's periodic committer may
   commit its offset; the gated consumer (``driftline.streams.faust_compat``) refuses any commit
   that would pass a message not done or still in flight (ledger: ``driftline.streams.offsets``).

Agents and the learning worker use only this class's public methods; a message that fails or is
cancelled is abandoned, never done, and Kafka redelivers it. Background: ``docs/delivery.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

from driftline.streams.faust_compat import install
from driftline.streams.offsets import CommitGate
from driftline.streams.sinks.base import BatchingSink

Release = Callable[[], None]


class Checkpoint:
    """Owns the gated topics, the sinks to flush and the in-flight/done state of every message."""

    def __init__(self, topics: Iterable[str] = (), sinks: dict[str, BatchingSink] | None = None) -> None:
        self._gate = CommitGate(topics)
        self.sinks: dict[str, BatchingSink] = sinks if sinks is not None else {}

    def install(self, app: Any) -> None:
        """Make ``app``'s consumer obey this checkpoint (call before the app starts)."""
        install(app, self._gate)

    def track(self, *topics: str) -> None:
        """Gate these topics too: their offsets commit only once their messages are done."""
        self._gate.topics.update(topics)

    def gates(self, topic: str) -> bool:
        """Whether ``topic``'s offsets wait for this checkpoint."""
        return self._gate.gates(topic)

    # --- per message ---------------------------------------------------------------------------

    def begin(self, messages: Iterable[Any]) -> None:
        """An agent started on these messages: nothing at or after them may commit yet."""
        self._gate.begin(messages)

    def done(self, messages: Iterable[Any]) -> None:
        """Steps 1 and 2 are over for these messages: step 3 may commit them once acked."""
        self._gate.done(messages)

    def abandon(self, messages: Iterable[Any]) -> None:
        """Processing failed or was cancelled: the offsets stay uncommitted until redelivered."""
        self._gate.abandon(messages)

    @contextlib.asynccontextmanager
    async def batch(self, messages: Sequence[Any]) -> AsyncIterator[None]:
        """``begin`` the messages; ``done`` when the block completes, ``abandon`` when it raises."""
        self.begin(messages)
        try:
            yield
        except BaseException:
            # the stream still acks the batch on the way out, but acks of undone messages never
            # become committable: the batch is redelivered, never lost
            self.abandon(messages)
            raise
        self.done(messages)

    def hold(self, events: Sequence[Any], on_release: Callable[[], Any] | None = None) -> Release:
        """Pin the events' offsets; the returned callback marks them done and acks them.

        Pass it as a sink's ``on_stored`` (step 1) or call it once the outputs were produced (step 2).
        The stream's own ack then only drops the extra reference taken here.
        """
        for event in events:
            event.message.incref()

        def release() -> None:
            self.done(e.message for e in events)
            for event in events:
                event.ack()
            if on_release is not None:
                on_release()

        return release

    # --- steps --------------------------------------------------------------------------------

    async def tick(self) -> None:
        """Step 1 on the time bound: flush every sink whose oldest row is due."""
        for sink in self.sinks.values():
            await sink.tick()

    async def flush(self) -> None:
        """Step 1 for everything buffered (shutdown): offsets of rows not stored stay uncommitted."""
        for sink in self.sinks.values():
            with contextlib.suppress(Exception):
                await sink.flush()

    @staticmethod
    async def produced(pending: Iterable[Awaitable[Any]]) -> None:
        """Step 2: wait for Kafka's acks of sent messages; raises if one failed."""
        await asyncio.gather(*pending)
