"""Every reach into faust-streaming internals, in one place, checked against the versions it supports.

Refuses to import under an unchecked faust-streaming release; why each override exists: ``docs/delivery.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Iterator
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.transport.drivers.aiokafka import Producer as AIOKafkaProducer
from mode.utils.queues import FlowControlEvent

from driftline.clients import PRODUCER_DURABILITY

if TYPE_CHECKING:
    from driftline.streams.checkpoint import CommitGate

#: faust-streaming releases these overrides were checked against: ``>=MIN,<BELOW`` (pyproject pins it)
SUPPORTED = ((0, 15, 3), (0, 16))

log = logging.getLogger(__name__)


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


def check_version(installed: str | None = None) -> None:
    """Raise ``RuntimeError`` unless the installed faust-streaming is in ``SUPPORTED``."""
    installed = installed or version("faust-streaming")
    low, below = SUPPORTED
    if not low <= _release(installed) < below:
        raise RuntimeError(
            f"faust-streaming {installed} is not supported by driftline.streams.faust_compat "
            f"(checked against >={'.'.join(map(str, low))},<{'.'.join(map(str, below))}); "
            "its consumer overrides reach into private Faust internals"
        )


check_version()


def _name(tp: Any) -> str:
    return f"{tp.topic}:{tp.partition}"


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
                extra={
                    "tp": f"{tp.topic}:{tp.partition}",
                    "from": offset_from,
                    "to": offset_to,
                    "read": self._read_offset.get(tp),
                    "committed": self._committed_offset.get(tp),
                },
            )
            await super()._add_gap(tp, offset_from, offset_to)

        async def _commit_offsets(self, offsets: Any, start_new_transaction: bool = True) -> bool:
            log.debug("commit", extra={"offsets": {_name(tp): o for tp, o in offsets.items()}})
            return await super()._commit_offsets(offsets, start_new_transaction=start_new_transaction)

        async def perform_seek(self) -> None:
            read_before = dict(self._read_offset)
            await super().perform_seek()
            # partitions never committed: record each one's log start (a first commit must begin
            # there) and rewind those that delivered something - read by a stream, or fetched past
            # the log start and dropped while flow was suspended (docs/delivery.md)
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


class KeepLiveQueuesFlowControl(FlowControlEvent):
    """Faust's flow control, except that resuming flow that was never suspended keeps the queues.

    mode's ``FlowControlEvent.resume`` clears every stream queue on each call. Faust's table recovery
    calls it after seeking to the committed offsets while the fetcher is already running, so events
    fetched after that seek - their read offset already recorded, never to be fetched again - were
    dropped from the queues (docs/delivery.md). Clearing is only right when flow was suspended (a
    rebalance: what is queued is stale and will be fetched again from the committed offsets).
    """

    def resume(self) -> None:
        """Resume production into the queues; clear them only if flow was suspended."""
        if self._suspend.is_set():
            super().resume()
            return
        self._resume.set()


def partition_offsets(app: Any) -> Iterator[tuple[Any, int | None, Container[int]]]:
    """Each assigned partition with its committed offset and the offsets acked since, while the
    consumer is in a steady state (nothing while a rebalance is under way or flow is suspended)."""
    consumer = app.consumer
    if app.rebalancing or not consumer.flow_active:
        return
    for tp in consumer.assignment():
        yield tp, consumer._committed_offset.get(tp), consumer._acked_index[tp]


async def seek_back(app: Any, tp: Any, offset: int) -> None:
    """Make the consumer read ``tp`` again from ``offset`` (in its own thread, read offset reset)."""
    await app.consumer.seek_wait({tp: offset})


def install(app: Any, gate: CommitGate) -> None:
    """Make ``app`` create gated consumers, use Faust's Python stream iterator and keep live queues
    on resume (before it starts)."""
    import faust.streams

    faust.streams._CStreamIterator = None  # the Cython iterator acks behind Consumer.ack's back
    app.flow_control.__class__ = KeepLiveQueuesFlowControl
    transport = app.transport
    transport.Consumer = gated_consumer(gate, transport.Consumer)


def durable_producer(base: type = AIOKafkaProducer) -> type:
    """A Faust producer class whose aiokafka producer writes with ``acks=all`` and idempotence.

    Faust passes ``producer_acks`` through but enables idempotence only inside transactions
    (``_settings_extra``), so a retried send after a lost broker could duplicate a record.
    """

    class DurableProducer(base):  # type: ignore[misc, valid-type]
        def _settings_extra(self) -> Any:
            return {**super()._settings_extra(), **PRODUCER_DURABILITY}

    return DurableProducer


def install_durable_producer(app: Any) -> None:
    """Make ``app`` create ``durable_producer`` producers (before it starts)."""
    transport = app.transport
    transport.Producer = durable_producer(transport.Producer)


async def load_topic_metadata(app: Any, topic: str) -> None:
    """Make the producer fetch ``topic``'s partitions before the first write to it.

    A table with ``use_partitioner=True`` picks its changelog partition from the producer's cached
    metadata without fetching it; a producer that never sent there fails with a ``TypeError``.
    """
    producer = app.producer._ensure_producer()  # aiokafka producer behind Faust's
    await producer.client._wait_on_metadata(topic)


def verify_table_partitions(tables: list[Any], source_topic: str) -> None:
    """Check now, before any write, that each table's changelog has ``source_topic``'s partitions.

    Faust checks this on a table's first write from a topic, against the consumer's metadata; a
    changelog created moments ago can still show 0 partitions there, and the check then raises
    ``PartitionsMismatch`` in the middle of an update (some tables written, others not). Raised here,
    the caller can wait for the metadata and retry the whole update. Windowed tables are checked
    through the table they wrap.
    """
    for table in tables:
        getattr(table, "table", table)._verify_source_topic_partitions(source_topic)
