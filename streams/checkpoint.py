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
cancelled is abandoned, never done, and is read again. A periodic check (``redeliver``) seeks a
partition back to its committed offset when that offset has become a hole - skipped, dropped or
abandoned while later messages went on - because a running Faust consumer never reads it again by
itself. Background: ``docs/delivery.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

from driftline.streams.faust_compat import install, partition_offsets, seek_back
from driftline.streams.offsets import CommitGate
from driftline.streams.sinks.base import BatchingSink

Release = Callable[[], None]

log = logging.getLogger(__name__)


class Checkpoint:
    """Owns the gated topics, the sinks to flush and the in-flight/done state of every message."""

    def __init__(
        self,
        topics: Iterable[str] = (),
        sinks: dict[str, BatchingSink] | None = None,
        *,
        redeliver_after_s: float = 30.0,
        on_redeliver: Callable[[str], Any] | None = None,
    ) -> None:
        self._gate = CommitGate(topics)
        self.sinks: dict[str, BatchingSink] = sinks if sinks is not None else {}
        self.redeliver_after_s = redeliver_after_s
        self.on_redeliver = on_redeliver  # called with the topic of each seek back

    def install(self, app: Any) -> None:
        """Make ``app``'s consumer obey this checkpoint and check for holes (before the app starts)."""
        install(app, self._gate)

        async def redeliver_holes() -> None:
            try:
                await self.redeliver(app)
            except Exception as exc:  # a broker away mid-seek: the next round tries again
                log.warning("hole check failed", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})

        app.timer(interval=max(0.5, self.redeliver_after_s / 4), name="redeliver-holes")(redeliver_holes)

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
        """Pin the events' offsets (in flight); the returned callback marks them done and acks them.

        Pass it as a sink's ``on_stored`` (step 1) or call it once the outputs were produced (step 2).
        The stream's own ack then only drops the extra reference taken here.
        """
        self.begin(event.message for event in events)
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

    async def redeliver(self, app: Any, now: float | None = None) -> list[tuple[Any, int]]:
        """Seek every gated partition whose committed offset has been a hole for
        ``redeliver_after_s`` back to it; returns the (partition, offset) pairs sought."""
        now = time.monotonic() if now is None else now
        sought, assigned = [], set()
        for tp, committed, acked in partition_offsets(app):
            assigned.add(tp)
            if not self._gate.gates(tp.topic):
                continue
            offset = self._gate.hole(tp, committed, acked, now, self.redeliver_after_s)
            if offset is None:
                continue
            log.warning(
                "redelivering a hole: offset neither done nor in flight while later ones were read",
                extra={"tp": f"{tp.topic}:{tp.partition}", "offset": offset},
            )
            await seek_back(app, tp, offset)
            self._gate.redelivering(tp, offset)
            sought.append((tp, offset))
            if self.on_redeliver is not None:
                self.on_redeliver(tp.topic)
        if assigned:
            self._gate.retain(assigned)
        return sought

    @staticmethod
    async def produced(pending: Iterable[Awaitable[Any]]) -> None:
        """Step 2: wait for Kafka's acks of sent messages; raises if one failed."""
        await asyncio.gather(*pending)
