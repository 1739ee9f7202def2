"""The commit gate: an input offset becomes committable only when the pipeline says it is done.

WHY this exists (the lost-events bug found by ``tests/reliability/test_faults.py``): Faust decides what
to commit from *acks*, and Faust acks messages our agents never processed. While flow control is
suspended (rebalance, table recovery at start-up) or when a message was fetched under an older
consumer generation, ``Stream.__aiter__`` *skips* the message and acks it anyway
(``do_ack or value is skipped_value``), trusting a later seek to bring it back. The periodic commit
can run first: the skipped offsets are committed, the seek goes to the new committed offset and the
events are gone for good - on a worker that takes over partitions after a SIGKILL these are exactly
the "early" events produced while the partitions were ownerless. Faust's gap check in
``Consumer._new_offset`` has two more holes: it is skipped while nothing was ever committed
(``if committed_offset:`` is false for None and 0) and it is off by one (``min(acked) - committed > 1``
lets one unacked offset at the committed position slip), so an out-of-order ack (concurrent actors)
can commit past an event still being classified.

A fourth hole is aiokafka's: ``seek_to_committed`` moves only partitions whose committed offset is
> 0. A partition never committed (a new topic, or one whose owner was SIGKILLed before its first
commit) stays wherever its fetcher is, so messages fetched and dropped while flow was suspended are
never read again: the fault test's per-event record showed a new owner starting at offset 3 of a
partition whose offsets 0-2 had arrived while it was ownerless.

A fifth: Faust's Cython ``StreamIterator`` acks by writing the consumer's bookkeeping itself, so an
overridden ``Consumer.ack`` never sees those acks; ``install`` makes Faust use its Python iterator.

The gate closes all of them: ``Consumer.ack`` records an offset of a gated topic only if the
agent marked that very message *done* (classify: its prediction or dead letter was acked by Kafka;
store: its rows are in ClickHouse), and ``_new_offset`` refuses to commit while an acked run does
not start at the committed position (before the first commit: at the log start, where the gated
consumer seeks uncommitted partitions itself) or lies beyond a message still in flight in an agent. Acks of
undone messages still clear Faust's unacked bookkeeping (so rebalances don't wait on them), but
their offsets stay uncommitted and Kafka redelivers them.
"""

from __future__ import annotations

import logging
import weakref
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer

log = logging.getLogger(__name__)


class CommitGate:
    """Pipeline-side ledger of gated topics: messages in flight and messages done."""

    def __init__(self, topics: Iterable[str] = ()) -> None:
        self.topics: set[str] = set(topics)
        self._done: weakref.WeakSet[Any] = weakref.WeakSet()
        self._inflight: dict[Any, Counter[int]] = defaultdict(Counter)
        #: where consumption of a partition without a committed offset started (the log start)
        self.starts: dict[Any, int] = {}

    def gates(self, topic: str) -> bool:
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
        return message in self._done

    def min_inflight(self, tp: Any) -> int | None:
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


def gated_consumer(gate: CommitGate, base: type = AIOKafkaConsumer) -> type:
    """A Faust consumer class that consults ``gate`` before recording acks and committing."""

    class GatedConsumer(base):  # type: ignore[misc, valid-type]
        def ack(self, message: Any) -> bool:
            if gate.gates(message.topic) and not gate.is_done(message):
                # skipped or failed: forget it as unacked, but never make its offset committable
                message.acked = True
                self._unacked_messages.discard(message)
                return False
            return super().ack(message)

        def _new_offset(self, tp: Any) -> int | None:
            if not gate.commit_allowed(tp, self._acked[tp], self._committed_offset[tp]):
                return None
            return super()._new_offset(tp)

        async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
            # Faust treats offsets it never saw as done (compaction, transaction markers); on our
            # plain topics that should not happen, so say so loudly when it does
            log.warning(
                "offset gap",
                extra={"tp": f"{tp.topic}:{tp.partition}", "from": offset_from, "to": offset_to,
                       "read": self._read_offset.get(tp), "committed": self._committed_offset.get(tp)},
            )  # fmt: skip
            await super()._add_gap(tp, offset_from, offset_to)

        async def _commit_offsets(self, offsets: Any, start_new_transaction: bool = True) -> bool:
            log.debug("commit", extra={"offsets": {_name(tp): o for tp, o in offsets.items()}})
            return await super()._commit_offsets(offsets, start_new_transaction=start_new_transaction)

        async def perform_seek(self) -> None:
            read_before = dict(self._read_offset)
            await super().perform_seek()
            # aiokafka's seek_to_committed moves only partitions with a committed offset > 0; one with
            # none (or 0) stays wherever its fetcher is - past messages fetched and dropped while flow
            # was suspended. Every such partition gets its log start recorded (the gate then refuses
            # a first commit that does not start there), and those that delivered something - read
            # by a stream, or only fetched past the log start and dropped - are sought back to it.
            never = [
                tp for tp in self.assignment() if gate.gates(tp.topic) and not self._committed_offset.get(tp)
            ]
            unknown = [tp for tp in never if tp not in gate.starts]
            if unknown:
                earliest = await self.earliest_offsets(*unknown)
                gate.starts.update({tp: int(earliest.get(tp) or 0) for tp in unknown})
            fresh = []
            for tp in never:
                if read_before.get(tp) is not None:
                    fresh.append(tp)
                    continue
                position = await self.position(tp)
                if position is not None and position > gate.starts[tp]:
                    fresh.append(tp)
            if fresh:
                # in the consumer's own thread, as Faust's seeks (aiokafka's fetcher is not thread-safe)
                await self.seek_wait({tp: gate.starts[tp] for tp in fresh})
                log.info(
                    "rewound never-committed partitions",
                    extra={"to": {_name(tp): gate.starts[tp] for tp in fresh}},
                )

    return GatedConsumer


def _name(tp: Any) -> str:
    return f"{tp.topic}:{tp.partition}"


def install(app: Any, gate: CommitGate) -> None:
    """Make ``app`` create gated consumers (call before the app starts).

    Also switches Faust's streams to the pure-Python iterator: the Cython ``StreamIterator`` acks
    messages by writing the consumer's bookkeeping itself (an inlined ``Consumer.ack``), so a
    skipped message would become committable behind the gate's back.
    """
    import faust.streams

    faust.streams._CStreamIterator = None
    transport = app.transport
    transport.Consumer = gated_consumer(gate, transport.Consumer)
