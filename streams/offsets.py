"""The offset ledger behind the commit rule: which messages are in flight, which are done.

``CommitGate`` is pure bookkeeping (no Faust): agents report through ``driftline.streams.checkpoint``,
and the gated Faust consumer (``driftline.streams.faust_compat``) asks ``commit_allowed`` before it
records an ack or commits. An offset of a gated topic becomes committable only once its message is
done, every lower offset of the partition was acked, and no lower message is still in flight.
Why Faust's own acks are not enough: ``docs/delivery.md``.
"""

from __future__ import annotations

import weakref
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any


class CommitGate:
    """Pipeline-side ledger of gated topics: messages in flight and messages done."""

    def __init__(self, topics: Iterable[str] = ()) -> None:
        self.topics: set[str] = set(topics)
        self._done: weakref.WeakSet[Any] = weakref.WeakSet()
        self._inflight: dict[Any, Counter[int]] = defaultdict(Counter)
        #: where consumption of a partition without a committed offset started (the log start)
        self.starts: dict[Any, int] = {}

    def gates(self, topic: str) -> bool:
        """Whether offsets of ``topic`` commit only once done."""
        return topic in self.topics

    def begin(self, messages: Iterable[Any]) -> None:
        """An agent started on these messages: nothing at or after them may be committed yet."""
        for m in messages:
            self._inflight[m.tp][m.offset] += 1

    def done(self, messages: Iterable[Any]) -> None:
        """Their outputs are durable: their offsets may now be committed (once acked)."""
        for m in messages:
            self._done.add(m)
            counts = self._inflight.get(m.tp)
            if counts is not None:
                counts.pop(m.offset, None)  # also clears an earlier abandoned delivery of it

    def abandon(self, messages: Iterable[Any]) -> None:
        """Processing failed: never done. The offsets stay *in flight* on purpose - Faust does not
        seek back after an agent crash, so later offsets of the partition must not be committed past
        them until a redelivery (after a rebalance or restart) is done; until then nothing on the
        partition at or after them commits (duplicates on restart, never a loss)."""
        for m in messages:
            self._inflight[m.tp].setdefault(m.offset, 1)

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
