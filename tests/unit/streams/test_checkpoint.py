"""The commit gate and checkpoint (streams.checkpoint) on a real Faust consumer (no broker needed).

Each case is one way Faust alone would commit an input offset whose event never reached Kafka
downstream; the gate must keep ``_new_offset`` from returning an offset past it. Messages passed
over become holes that the checkpoint seeks back.
"""

from __future__ import annotations

import asyncio

import faust
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from driftline.streams.checkpoint import Checkpoint, CommitGate
from driftline.streams.faust_compat import install
from tests.support.sinks import PickySink

TOPIC = "gate-test-chat"


TP0 = TP(TOPIC, 0)


def _consumer(gate: CommitGate):
    app = faust.App("gate-test", broker="kafka://127.0.0.1:1", store="memory://")
    install(app, gate)
    app.topics._acking_topics.add(TOPIC)  # what subscribing an agent to the topic does
    return app.consumer


def _msg(offset: int) -> ConsumerMessage:
    m = ConsumerMessage(TOPIC, 0, offset, 0.0, 0, None, None, b"{}", None, tp=TP0)
    m.incref()  # delivered to one stream
    return m


def _ack(consumer, messages: list[ConsumerMessage]) -> None:
    for m in messages:
        m.ack(consumer)


class _SteadyConsumer:
    """What ``Checkpoint.redeliver`` reads of Faust's consumer, and the seeks it asks for."""

    flow_active = True

    def __init__(self, committed: dict, acked: dict) -> None:
        self._committed_offset = committed
        self._acked_index = acked
        self.seeks: list[dict] = []

    def assignment(self) -> set:
        return set(self._committed_offset)

    async def seek_wait(self, partitions: dict) -> None:
        self.seeks.append(dict(partitions))


class _App:
    rebalancing = False

    def __init__(self, consumer: _SteadyConsumer) -> None:
        self.consumer = consumer


def test_acks_of_messages_never_done_are_not_committable() -> None:
    # Faust acks messages it skipped during a rebalance/recovery: they must not become a commit
    gate = CommitGate([TOPIC])
    consumer = _consumer(gate)
    skipped = [_msg(o) for o in range(3)]
    for m in skipped:
        consumer.track_message(m)
    _ack(consumer, skipped)
    assert all(m.acked for m in skipped)  # Faust's bookkeeping is cleared (rebalances don't wait)
    assert not consumer._unacked_messages
    assert consumer._new_offset(TP0) is None


def test_done_then_acked_commits_after_the_last_done_offset() -> None:
    gate = CommitGate([TOPIC])
    consumer = _consumer(gate)
    batch = [_msg(o) for o in range(3)]
    gate.begin(batch)
    gate.done(batch)  # outputs acked by Kafka
    _ack(consumer, batch)  # take_events acks when the next batch is requested
    assert consumer._new_offset(TP0) == 3


def test_later_batch_done_first_cannot_commit_past_batch_in_flight() -> None:
    # concurrent actors, nothing committed yet (Faust skips its gap check then)
    gate = CommitGate([TOPIC])
    consumer = _consumer(gate)
    early, late = [_msg(o) for o in (0, 1)], [_msg(o) for o in (2, 3)]
    gate.begin(early)
    gate.begin(late)
    gate.done(late)
    _ack(consumer, late)
    assert consumer._new_offset(TP0) is None
    gate.done(early)
    _ack(consumer, early)
    assert consumer._new_offset(TP0) == 4


def test_failed_batch_blocks_later_commits_until_redelivered_and_done() -> None:
    # nothing committed yet: Faust's own gap check would commit 2..3 past the failed 0..1
    gate = CommitGate([TOPIC])
    consumer = _consumer(gate)
    failed, later = [_msg(o) for o in range(2)], [_msg(o) for o in (2, 3)]
    gate.begin(failed)
    gate.abandon(failed)  # inference or the send failed / task cancelled
    _ack(consumer, failed)
    gate.begin(later)
    gate.done(later)
    _ack(consumer, later)
    assert consumer._new_offset(TP0) is None
    assert gate.min_inflight(TP0) == 0
    again = [_msg(o) for o in range(2)]  # redelivered after a rebalance/restart
    gate.begin(again)
    gate.done(again)
    _ack(consumer, again)
    assert consumer._new_offset(TP0) == 4


def test_acked_run_must_start_at_the_committed_offset() -> None:
    # Faust's own check is off by one: committed=5 with offset 5 unacked still committed 6..
    gate = CommitGate([TOPIC])
    consumer = _consumer(gate)
    consumer._committed_offset[TP0] = 5
    later = [_msg(o) for o in (6, 7)]
    gate.done(later)
    _ack(consumer, later)
    assert consumer._new_offset(TP0) is None
    first = _msg(5)
    gate.done([first])
    _ack(consumer, [first])
    assert consumer._new_offset(TP0) == 8


def test_ungated_topics_keep_faust_semantics() -> None:
    gate = CommitGate([])  # e.g. the feedback topic, owned by streams.learning
    consumer = _consumer(gate)
    batch = [_msg(o) for o in range(2)]
    _ack(consumer, batch)
    assert consumer._new_offset(TP0) == 2


def test_first_commit_must_start_at_the_log_start() -> None:
    # never committed, and offsets 0..2 were fetched and dropped while flow was suspended: Faust
    # alone would commit 5 after 3..4 were done
    gate = CommitGate([TOPIC])
    consumer = _consumer(gate)
    gate.starts[TP0] = 0  # where the gated consumer sought the uncommitted partition
    later = [_msg(o) for o in (3, 4)]
    gate.begin(later)
    gate.done(later)
    _ack(consumer, later)
    assert consumer._new_offset(TP0) is None
    first = [_msg(o) for o in range(3)]
    gate.begin(first)
    gate.done(first)
    _ack(consumer, first)
    assert consumer._new_offset(TP0) == 5


async def test_uncommitted_gated_partitions_are_sought_to_the_log_start(monkeypatch) -> None:
    # aiokafka's seek_to_committed leaves a partition without a committed offset where its fetcher is
    gate = CommitGate([TOPIC])
    consumer = _consumer(gate)
    other, committed, untouched = TP("other-topic", 0), TP(TOPIC, 1), TP(TOPIC, 2)
    dropped = TP(TOPIC, 3)  # nothing read by a stream, but fetched past the log start and dropped
    consumer._committed_offset[committed] = 7
    consumer._read_offset[TP0] = 3  # offsets 0..3 were fetched and dropped while flow was paused

    async def faust_seek(self) -> None:  # Faust + aiokafka: only committed partitions move
        pass

    async def earliest(*tps):
        return {tp: 2 for tp in tps}  # retention removed offsets 0..1

    sought: dict = {}

    async def seek_wait(partitions) -> None:  # runs in the consumer's thread (aiokafka is not thread-safe)
        sought.update(partitions)

    monkeypatch.setattr(type(consumer).__mro__[1], "perform_seek", faust_seek)

    async def position(tp):
        return {untouched: 2, dropped: 4}[tp]

    monkeypatch.setattr(consumer, "assignment", lambda: {TP0, other, committed, untouched, dropped})
    monkeypatch.setattr(consumer, "earliest_offsets", earliest)
    monkeypatch.setattr(consumer, "position", position)
    monkeypatch.setattr(consumer, "seek_wait", seek_wait)
    await consumer.perform_seek()
    assert sought == {TP0: 2, dropped: 2}  # nothing fetched on `untouched`: left alone
    # every never-committed gated partition knows its log start: a first commit must begin there
    assert gate.starts == {TP0: 2, untouched: 2, dropped: 2}
    assert not gate.commit_allowed(untouched, [3], None) and gate.commit_allowed(untouched, [2, 3], None)


def test_install_routes_every_ack_through_the_gated_consumer() -> None:
    # Faust's Cython stream iterator inlines Consumer.ack (it would record skipped messages itself)
    import faust.streams

    _consumer(CommitGate([TOPIC]))
    assert faust.streams._CStreamIterator is None


def test_a_message_passed_over_is_a_hole_once_it_lasted_long_enough() -> None:
    gate = CommitGate([TOPIC])
    consumer = _consumer(gate)
    consumer._committed_offset[TP0] = 5
    later = [_msg(6), _msg(7)]
    gate.begin(later)  # offset 5 was skipped (never begun) while 6 and 7 reached the agent
    gate.done(later)
    _ack(consumer, later)
    acked = consumer._acked_index[TP0]
    assert consumer._new_offset(TP0) is None  # the gate holds everything after the hole
    assert gate.hole(TP0, 5, acked, now=100.0, after_s=30) is None  # first sight
    assert gate.hole(TP0, 5, acked, now=129.0, after_s=30) is None
    assert gate.hole(TP0, 5, acked, now=130.0, after_s=30) == 5
    gate.redelivering(TP0, 5)
    assert gate.hole(TP0, 5, acked, now=131.0, after_s=30) is None  # waits for later ones again
    again = _msg(5)
    gate.begin([again])
    gate.done([again])
    _ack(consumer, [again])
    assert consumer._new_offset(TP0) == 8  # the redelivered offset closes the hole


def test_in_flight_waiting_or_acked_offsets_are_not_holes() -> None:
    gate = CommitGate([TOPIC])
    slow, later = _msg(5), _msg(6)
    gate.begin([slow, later])  # 5 still classifying (or held by a sink), 6 done
    gate.done([later])
    assert gate.hole(TP0, 5, {6}, now=0.0, after_s=1) is None
    assert gate.hole(TP0, 5, {6}, now=100.0, after_s=1) is None
    gate.done([slow])
    assert gate.hole(TP0, 5, {5, 6}, now=200.0, after_s=1) is None  # acked: commits next round
    # nothing later read yet: offset 7 may still be queued for its agent, not a hole
    assert gate.hole(TP0, 7, set(), now=300.0, after_s=1) is None
    assert gate.hole(TP0, 7, set(), now=400.0, after_s=1) is None


def test_an_abandoned_message_is_a_hole_even_with_nothing_after_it() -> None:
    gate = CommitGate([TOPIC])
    failed = _msg(3)
    gate.begin([failed])
    gate.abandon([failed])  # Kafka was down when its prediction was produced: the agent gave up
    assert gate.hole(TP0, 3, set(), now=10.0, after_s=5) is None
    assert gate.hole(TP0, 3, set(), now=15.0, after_s=5) == 3
    gate.redelivering(TP0, 3)
    assert gate.min_inflight(TP0) is None  # the given-up delivery no longer blocks commits
    assert gate.hole(TP0, 3, set(), now=100.0, after_s=5) is None


def test_a_hole_that_moves_or_is_revoked_starts_its_clock_again() -> None:
    gate = CommitGate([TOPIC])
    gate.begin([_msg(9)])
    assert gate.hole(TP0, 4, set(), now=0.0, after_s=10) is None
    assert gate.hole(TP0, 5, set(), now=9.0, after_s=10) is None  # the commit moved on
    assert gate.hole(TP0, 5, set(), now=18.0, after_s=10) is None
    gate.retain(set())  # revoked: a new owner seeks to the commit itself
    assert gate.hole(TP0, 5, set(), now=25.0, after_s=10) is None
    assert gate.hole(TP0, 5, set(), now=35.0, after_s=10) == 5
    # before the first commit the hole is measured from the log start
    gate.starts[TP(TOPIC, 1)] = 0
    gate.begin([ConsumerMessage(TOPIC, 1, 2, 0.0, 0, None, None, b"{}", None, tp=TP(TOPIC, 1))])
    assert gate.hole(TP(TOPIC, 1), None, set(), now=0.0, after_s=1) is None
    assert gate.hole(TP(TOPIC, 1), None, set(), now=1.0, after_s=1) == 0


async def test_checkpoint_seeks_gated_holes_back_and_reports_them() -> None:
    from driftline.streams.checkpoint import Checkpoint

    other = TP("ungated", 0)
    topics: list[str] = []
    checkpoint = Checkpoint([TOPIC], redeliver_after_s=5, on_redeliver=topics.append)
    consumer = _SteadyConsumer({TP0: 2, other: 0}, {TP0: set(), other: set()})
    app = _App(consumer)
    checkpoint.begin([_msg(3), ConsumerMessage("ungated", 0, 1, 0.0, 0, None, None, b"", None, tp=other)])
    assert await checkpoint.redeliver(app, now=0.0) == []
    app.rebalancing = True  # mid-rebalance: the new assignment's seek decides, not this check
    assert await checkpoint.redeliver(app, now=10.0) == []
    app.rebalancing = False
    assert await checkpoint.redeliver(app, now=10.0) == [(TP0, 2)]
    assert consumer.seeks == [{TP0: 2}]
    assert topics == [TOPIC]


async def test_a_sink_retrying_its_write_does_not_hold_up_the_others_time_bound() -> None:
    """One store away: its sink keeps retrying while every other sink still flushes on time."""
    down = PickySink(set(), transient=10**9)
    down.name = "down"
    up = PickySink(set())
    checkpoint = Checkpoint([TOPIC], sinks={"down": down, "up": up})
    for sink in (down, up):
        sink.max_age_s = 0.0
    await down.add([1, 2])
    await up.add([3])
    await asyncio.wait_for(checkpoint.tick(), timeout=5)
    assert up.stored == [3], "the healthy sink flushed although the other one is retrying"
    await up.add([4])
    await asyncio.wait_for(
        checkpoint.tick(), timeout=5
    )  # the retrying sink is not ticked twice; the healthy one goes on
    assert up.stored == [3, 4] and down.stored == [] and down.writes > 1
    down.transient = 0  # the store is back: the running tick stores its rows
    for _ in range(200):
        if down.stored:
            break
        await asyncio.sleep(0.01)
    assert down.stored == [1, 2]
    await checkpoint.flush()
