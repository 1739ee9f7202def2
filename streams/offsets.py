"""The offset ledger behind the commit rule: which messages are in flight, which are done.

``CommitGate`` is pure bookkeeping (no Faust): agents report through ``driftline.streams.checkpoint``,
and the gated Faust consumer (``driftline.streams.faust_compat``) asks ``commit_allowed`` before it
records an ack or commits. An offset of a gated topic becomes committable only once its message is
done, every lower offset of the partition was acked, and no lower message is still in flight.
Why Faust's own acks are not enough: ``docs/delivery.md``.

It also spots a *hole*: the next offset to commit is neither done nor in flight (or its agent gave
up on it) while an agent already got a later message of the partition. Whatever skipped it - a
Faust skip, a queue cleared on resume, an agent crash - the running consumer will not read it
again, and the gate keeps everything after it uncommitted; ``hole`` says when to seek back.
"""

from __future__ import annotations

import weakref
from collections import Counter, defaultdict
from collections.abc import Container, Iterable
from typing import Any


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
