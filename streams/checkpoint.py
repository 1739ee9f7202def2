"""The commit rule in one object: an input offset is committed only after its outputs are durable.

``Checkpoint``: flush the sinks, produce, then commit; a failed message is abandoned and read again, and
``redeliver`` repairs holes. Background: ``docs/delivery.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Container, Iterable, Sequence
from typing import Any

from driftline.streams.faust_compat import install, partition_offsets, seek_back
from driftline.streams.sinks.base import BatchingSink

Release = Callable[[], None]
#: how long a tick waits for the sinks' flushes before the timer moves on (they go on meanwhile)
TICK_WAIT_S = 1.0

log = logging.getLogger(__name__)


class Checkpoint:
    """Owns the gated topics, the sinks to flush and the in-flight/done state of every message.

    An input message's offset joins a Kafka commit only after three steps, in this order:

    1. flush the sinks: its rows are durably stored (``hold``'s release runs after the insert);
    2. produce: every message it caused (predictions, dead letters) was acked (``produced``);
    3. commit: it is marked done and acked; the gated consumer refuses any commit that would pass a
       message not done or still in flight (the ledger: ``CommitGate``).
    """

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
        self._ticks: dict[str, asyncio.Task[None]] = {}  # per sink: its time-bound flush in progress

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
        """Step 1 on the time bound: flush every sink whose oldest row is due.

        Each sink ticks in a task of its own: a sink retrying a write (its store is away) keeps
        retrying there while the others go on flushing, and gets its next tick once it is done.
        """
        started = []
        for name, sink in self.sinks.items():
            running = self._ticks.get(name)
            if running is not None and not running.done():
                continue
            if running is not None and not running.cancelled() and running.exception() is not None:
                log.error("sink tick failed", extra={"sink": name, "error": repr(running.exception())[:300]})
            self._ticks[name] = asyncio.create_task(sink.tick(), name=f"tick-{name}")
            started.append(self._ticks[name])
        if started:
            await asyncio.wait(started, timeout=TICK_WAIT_S)

    async def flush(self) -> None:
        """Step 1 for everything buffered (shutdown): offsets of rows not stored stay uncommitted."""
        for task in self._ticks.values():
            task.cancel()  # a tick still retrying puts its rows back; the flush below writes them
        await asyncio.gather(*self._ticks.values(), return_exceptions=True)
        self._ticks.clear()
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


class CommitGate:
    """Pipeline-side ledger of gated topics: messages in flight and messages done."""

    def __init__(self, topics: Iterable[str] = ()) -> None:
        self.topics: set[str] = set(topics)
        self._done: weakref.WeakSet[Any] = weakref.WeakSet()
        self._inflight: dict[Any, Counter[int]] = defaultdict(Counter)
        #: where consumption of a partition without a committed offset started (the log start)
        self.starts: dict[Any, int] = {}
        self._seen: dict[Any, int] = {}  # highest offset an agent began, per partition
        self._abandoned: dict[Any, set[int]] = defaultdict(set)
        self._holes: dict[Any, tuple[int, float]] = {}  # partition -> (offset, first seen)

    def gates(self, topic: str) -> bool:
        """Whether offsets of ``topic`` commit only once done."""
        return topic in self.topics

    def begin(self, messages: Iterable[Any]) -> None:
        """An agent started on these messages: nothing at or after them may be committed yet."""
        for m in messages:
            self._inflight[m.tp][m.offset] += 1
            if m.offset > self._seen.get(m.tp, -1):
                self._seen[m.tp] = m.offset

    def done(self, messages: Iterable[Any]) -> None:
        """Their outputs are durable: their offsets may now be committed (once acked)."""
        for m in messages:
            self._done.add(m)
            counts = self._inflight.get(m.tp)
            if counts is not None:
                counts.pop(m.offset, None)  # also clears an earlier abandoned delivery of it
            self._abandoned[m.tp].discard(m.offset)

    def abandon(self, messages: Iterable[Any]) -> None:
        """Processing failed: never done. The offsets stay *in flight* on purpose - Faust does not
        seek back after an agent crash, so later offsets of the partition must not be committed past
        them until a redelivery (a rebalance, a restart, or the seek ``hole`` asks for) is done; until
        then nothing on the partition at or after them commits (duplicates, never a loss)."""
        for m in messages:
            self._inflight[m.tp].setdefault(m.offset, 1)
            self._abandoned[m.tp].add(m.offset)

    def is_done(self, message: Any) -> bool:
        """Whether ``message``'s outputs were marked durable."""
        return message in self._done

    def min_inflight(self, tp: Any) -> int | None:
        """The lowest offset of ``tp`` an agent is still working on."""
        counts = self._inflight.get(tp)
        return min(counts) if counts else None

    def commit_allowed(self, tp: Any, acked: list[int], committed: int | None) -> bool:
        """Whether Faust may turn ``acked`` (offsets acked on ``tp``) into a commit now."""
        if not acked:
            return True
        lowest = min(acked)
        # ``committed`` is Kafka's: the next offset to read. An acked run must start right there -
        # or, before the first commit, at the log start the consumer was sought to
        expected = committed if committed is not None else self.starts.get(tp)
        if expected is not None and lowest > expected:
            return False
        inflight = self.min_inflight(tp)
        return inflight is None or inflight > lowest

    def hole(
        self, tp: Any, committed: int | None, acked: Container[int], now: float, after_s: float
    ) -> int | None:
        """The offset to seek ``tp`` back to, once a hole there has lasted ``after_s`` seconds.

        ``committed`` is Kafka's next offset to read (None before the first commit: the log start),
        ``acked`` the offsets acked since. A hole is that next offset, not acked, and either abandoned
        by its agent or neither in flight nor begun while a later offset was. The caller seeks back
        to it (later messages come again: at-least-once, absorbed by the sinks' dedup)."""
        expected = committed if committed is not None else self.starts.get(tp)
        if expected is None or expected in acked:
            self._holes.pop(tp, None)
            return None
        abandoned = expected in self._abandoned.get(tp, ())
        passed_over = self._seen.get(tp, -1) > expected and expected not in self._inflight.get(tp, ())
        if not (abandoned or passed_over):
            self._holes.pop(tp, None)
            return None
        offset, since = self._holes.setdefault(tp, (expected, now))
        if offset != expected:
            self._holes[tp] = (expected, now)
            return None
        if now - since < after_s:
            return None
        self._holes.pop(tp)
        return expected

    def redelivering(self, tp: Any, offset: int) -> None:
        """``tp`` was sought back to ``offset``: what is at or after it comes again."""
        counts = self._inflight.get(tp)
        for stale in self._abandoned.pop(tp, set()):
            if counts is not None and stale >= offset:
                counts.pop(stale, None)  # given up on: their redelivery begins them afresh
        self._seen[tp] = offset - 1

    def retain(self, assigned: Container[Any]) -> None:
        """Forget the holes of partitions no longer ``assigned`` (a new owner seeks to the commit)."""
        for tp in [tp for tp in self._holes if tp not in assigned]:
            del self._holes[tp]
