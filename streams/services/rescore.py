"""Re-score a past time range of a task's input topics with a chosen version, beside the original labels.

``driftline rescore`` reads the range back from Kafka retention into ``rescored_labels``; runs resume, and a
range partly deleted by retention is refused.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from driftline.models.inference.base import InferenceClient, Prediction
from driftline.schema.records import RescoredRecord, RescoreProgressRecord
from driftline.schema.timestamps import now_ms
from driftline.streams.decode import Rejection, decode_event
from driftline.streams.routing import Route
from driftline.streams.sinks.base import BatchingSink


class OutOfRetention(RuntimeError):
    """Part of the requested range has been deleted from a partition (retention)."""


@dataclass(frozen=True)
class Span:
    """The offsets ``[start, end)`` of one partition that fall in the range."""

    topic: str
    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        """Offsets in the span (records, plus any control records or compacted gaps)."""
        return max(0, self.end - self.start)


@dataclass(frozen=True)
class Version:
    """The version a run classifies with: what ``client.predict`` is asked for and what rows record."""

    model_name: str
    version: str | None  # None: the client's default (the candidate's artifact)
    label: str  # what ``model_version`` says on the rows ("3", or "candidate:<adapter hash>")


def run_id_for(task: str, version: str, from_ms: int, to_ms: int) -> str:
    """The run id of one version over one range: the same command resumes the same run."""
    return hashlib.sha1(f"{task}|{version}|{from_ms}|{to_ms}".encode()).hexdigest()[:16]


async def plan_spans(consumer: Any, topics: Sequence[str], from_ms: int, to_ms: int) -> list[Span]:
    """Per partition of ``topics``, the offsets whose Kafka timestamps fall in ``[from_ms, to_ms)``.

    ``consumer`` is a started aiokafka consumer. Raises ``OutOfRetention`` when a partition's range
    starts before the oldest event it still holds, ``ValueError`` for an empty range or an unknown topic.
    """
    from aiokafka import TopicPartition

    if to_ms <= from_ms:
        raise ValueError(f"the range is empty: --to ({to_ms}) must be after --from ({from_ms})")
    known = await consumer.topics()
    missing = [t for t in topics if t not in known]
    if missing:
        raise ValueError(f"input topic(s) {missing} do not exist")
    partitions = []
    for topic in topics:
        # an unassigned consumer holds no metadata of the topic: fetch it (aiokafka has no public call)
        found = await consumer._client._wait_on_metadata(topic)
        partitions += [TopicPartition(topic, p) for p in sorted(found)]
    first = await consumer.beginning_offsets(partitions)
    last = await consumer.end_offsets(partitions)
    starts = await consumer.offsets_for_times(dict.fromkeys(partitions, from_ms))
    ends = await consumer.offsets_for_times(dict.fromkeys(partitions, to_ms))
    spans = []
    for tp in partitions:
        found = starts[tp]
        start = found.offset if found is not None else last[tp]
        if first[tp] > 0 and start == first[tp] and (found is None or found.timestamp > from_ms):
            oldest = "none (every event is deleted)" if found is None else _iso(found.timestamp)
            raise OutOfRetention(
                f"{tp.topic}[{tp.partition}]: the range starts at {_iso(from_ms)}, but offsets before "
                f"{first[tp]} have been deleted (retention); the oldest event it holds is from {oldest}. "
                "Choose --from at or after that time."
            )
        end = ends[tp].offset if ends[tp] is not None else last[tp]
        spans.append(Span(tp.topic, tp.partition, start, max(start, end)))
    return spans


def _iso(ms: int) -> str:
    from driftline.schema.timestamps import to_datetime

    return to_datetime(ms).isoformat(timespec="seconds")


async def read_spans(
    consumer: Any, spans: Sequence[Span], chunk: int
) -> AsyncIterator[tuple[list[Any], dict[tuple[str, int], int]]]:
    """Chunks of records within ``spans``, each with the next offset per partition after it.

    ``consumer`` is a started aiokafka consumer with no subscription; it is assigned the spans'
    partitions. A partition is done when its position reaches the span's end (so control records
    and compacted gaps cannot stall it).
    """
    from aiokafka import TopicPartition

    todo = {TopicPartition(s.topic, s.partition): s for s in spans if s.size}
    if not todo:
        return
    consumer.assign(list(todo))
    for tp, span in todo.items():
        consumer.seek(tp, span.start)
    nexts = {tp: span.start for tp, span in todo.items()}
    while todo:
        fetched = await consumer.getmany(*todo, timeout_ms=1000, max_records=chunk)
        records = []
        for tp, batch in fetched.items():
            end = todo[tp].end
            records += [r for r in batch if r.offset < end]
        for tp in list(todo):
            position = await consumer.position(tp)
            nexts[tp] = min(position, todo[tp].end)
            if position >= todo[tp].end:
                consumer.pause(tp)
                del todo[tp]
        if records or not todo:
            yield records, {(tp.topic, tp.partition): offset for tp, offset in nexts.items()}


@dataclass
class RunCounts:
    """What one invocation did (a resumed run adds to what the earlier ones did)."""

    read: int = 0
    rescored: int = 0
    skipped: Counter = field(default_factory=Counter)  # rejection code -> messages
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        """Rescored events per second of this invocation."""
        return self.rescored / self.seconds if self.seconds else 0.0


class Rescorer:
    """One run: reads the spans, classifies each chunk and stores rows, then progress."""

    def __init__(
        self,
        *,
        run_id: str,
        task: str,
        routes: Sequence[Route],
        version: Version,
        client: InferenceClient,
        rows: BatchingSink,
        progress: BatchingSink,
        max_bytes: int,
        max_text_chars: int,
        from_ms: int,
        to_ms: int,
    ) -> None:
        self.run_id, self.task, self.version, self.client = run_id, task, version, client
        self.kinds = {r.topic: r.schema_kind for r in routes if r.task == task}
        if not self.kinds:
            raise ValueError(f"no input topic is routed to task {task!r}")
        self.rows, self.progress = rows, progress
        self.max_bytes, self.max_text_chars = max_bytes, max_text_chars
        self.from_ms, self.to_ms = from_ms, to_ms
        self.counts = RunCounts()
        self.starts: dict[tuple[str, int], int] = {}  # the range's first offset per partition

    @property
    def topics(self) -> list[str]:
        """The input topics of the task."""
        return list(self.kinds)

    def resume(self, spans: Sequence[Span], stored: Sequence[RescoreProgressRecord]) -> list[Span]:
        """What is left of ``spans`` after the stored progress of this run (whose offsets win)."""
        done = {(p.topic, p.partition): p for p in stored}
        left = []
        for span in spans:
            key = (span.topic, span.partition)
            if (mark := done.get(key)) is None:
                left.append(span)
                continue
            self.starts[key] = mark.start_offset
            left.append(Span(span.topic, span.partition, mark.next_offset, mark.end_offset))
        return left

    async def run(
        self, consumer: Any, spans: Sequence[Span], chunk: int, on_chunk: Callable[[int], None] | None = None
    ) -> RunCounts:
        """Re-score ``spans``; ``on_chunk(offsets advanced)`` reports progress."""
        started = time.perf_counter()
        ends = {(s.topic, s.partition): s.end for s in spans}
        before = {k: s.start for k, s in zip(ends, spans, strict=True)}
        for key, start in before.items():
            self.starts.setdefault(key, start)
        await self._store([], before, ends)  # fixes the range's end offsets for a resumed run
        async for records, nexts in read_spans(consumer, spans, chunk):
            rows = await self._classify(records)
            await self._store(rows, nexts, ends)
            if on_chunk is not None:
                on_chunk(sum(nexts[k] - before[k] for k in nexts))
            before = dict(nexts)
        self.counts.seconds += time.perf_counter() - started
        return self.counts

    async def _classify(self, records: Sequence[Any]) -> list[RescoredRecord]:
        good: list[tuple[Any, Any]] = []
        for record in records:
            self.counts.read += 1
            if not self.from_ms <= record.timestamp < self.to_ms:
                continue  # inside the offsets, outside the range: produced with an out-of-order time
            try:
                event = decode_event(
                    record.value,
                    self.kinds[record.topic],
                    max_bytes=self.max_bytes,
                    max_text_chars=self.max_text_chars,
                )
            except Rejection as rejection:
                self.counts.skipped[rejection.code] += 1
                continue
            good.append((record, event))
        if not good:
            return []
        predictions = await self.client.predict(
            self.version.model_name, [e.text for _, e in good], self.version.version
        )
        rescored_ms = now_ms()
        self.counts.rescored += len(good)
        return [self._row(r, e, p, rescored_ms) for (r, e), p in zip(good, predictions, strict=True)]

    def _row(self, record: Any, event: Any, p: Prediction, rescored_ms: int) -> RescoredRecord:
        names = list(p.probabilities)
        return RescoredRecord(
            run_id=self.run_id,
            task=self.task,
            event_id=event.id,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            event_ts_ms=event.ts_ms(),
            rescored_ts_ms=rescored_ms,
            model_name=p.model_name,
            model_version=self.version.label,
            adapter_hash=p.adapter_hash,
            engine=p.engine,
            label=p.label,
            confidence=p.confidence,
            label_names=names,
            probabilities=[p.probabilities[n] for n in names],
        )

    async def _store(self, rows: list[RescoredRecord], nexts: dict, ends: dict[tuple[str, int], int]) -> None:
        """Rows first, then the progress that says they are stored."""
        await self.rows.add([r.to_row() for r in rows])
        await self.rows.flush()
        marks = [
            RescoreProgressRecord(
                run_id=self.run_id,
                task=self.task,
                model_version=self.version.label,
                topic=topic,
                partition=partition,
                start_offset=self.starts[(topic, partition)],
                next_offset=offset,
                end_offset=ends[(topic, partition)],
                from_ts_ms=self.from_ms,
                to_ts_ms=self.to_ms,
            ).to_row()
            for (topic, partition), offset in nexts.items()
        ]
        await self.progress.add(marks)
        await self.progress.flush()


def stored_progress(client: Any, run_id: str) -> list[RescoreProgressRecord]:
    """The newest progress row per partition of a run."""
    rows = client.execute(
        f"SELECT {', '.join(RescoreProgressRecord.COLUMNS)} FROM {RescoreProgressRecord.TABLE} FINAL "
        "WHERE run_id = %(run)s",
        {"run": run_id},
    )
    return [RescoreProgressRecord.from_row(row) for row in rows]


@dataclass
class RescoreReport:
    """How a run's labels compare with the original labels and with joined feedback."""

    run_id: str
    task: str
    model_version: str
    events: int  # rows of the run
    compared: int  # of them with an original label
    agreement: float | None  # share of compared events with the same label
    graded: int  # events with joined feedback
    accuracy_original: float | None
    accuracy_rescored: float | None
    label_mix: dict[str, dict[str, float]]  # label -> {"original": share, "rescored": share}
    mix_change: float  # total variation distance between the two label mixes (0..1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


#: rescored label, original label ('' when none), true label ('' when none) -> events; one query,
#: nested joins (ClickHouse 18.16 joins two tables per SELECT), valid on modern ClickHouse too
REPORT_SQL = """
SELECT rescored, original, truth, count() AS n
FROM
(
    SELECT event_id, rescored, original
    FROM (SELECT event_id, label AS rescored FROM rescored_labels FINAL WHERE run_id = %(run)s) AS r
    ANY LEFT JOIN (SELECT event_id, label AS original FROM labels FINAL WHERE task = %(task)s) AS o
    USING event_id
) AS ro
ANY LEFT JOIN (SELECT event_id, label AS truth FROM feedback FINAL WHERE task = %(task)s) AS f
USING event_id
GROUP BY rescored, original, truth
"""


def report(client: Any, run_id: str, task: str, model_version: str) -> RescoreReport:
    """The run's report, from ClickHouse (so a resumed run reports on all of it)."""
    groups = [(r, o, t, int(n)) for r, o, t, n in client.execute(REPORT_SQL, {"run": run_id, "task": task})]
    return summarize(run_id, task, model_version, groups)


def summarize(
    run_id: str, task: str, model_version: str, groups: Sequence[tuple[str, str, str, int]]
) -> RescoreReport:
    """The report from ``(rescored, original, truth, events)`` groups ('' = missing)."""
    events = sum(n for *_, n in groups)
    compared = [(r, o, n) for r, o, _, n in groups if o]
    graded = [(r, o, t, n) for r, o, t, n in groups if t]
    n_compared = sum(n for *_, n in compared)
    n_graded = sum(n for *_, n in graded)
    graded_original = sum(n for _, o, _, n in graded if o)
    original_mix, rescored_mix = Counter(), Counter()
    for r, o, n in compared:
        original_mix[o] += n
        rescored_mix[r] += n
    labels = sorted(set(original_mix) | set(rescored_mix))
    mix = (
        {
            label: {
                "original": original_mix[label] / n_compared,
                "rescored": rescored_mix[label] / n_compared,
            }
            for label in labels
        }
        if n_compared
        else {}
    )
    return RescoreReport(
        run_id=run_id,
        task=task,
        model_version=model_version,
        events=events,
        compared=n_compared,
        agreement=sum(n for r, o, n in compared if r == o) / n_compared if n_compared else None,
        graded=n_graded,
        accuracy_original=(
            sum(n for _, o, t, n in graded if o and o == t) / graded_original if graded_original else None
        ),
        accuracy_rescored=sum(n for r, _, t, n in graded if r == t) / n_graded if n_graded else None,
        label_mix=mix,
        mix_change=sum(abs(m["original"] - m["rescored"]) for m in mix.values()) / 2,
    )


def resolve_version(
    task: str, routes: Sequence[Route], version: int | None, candidate: bool
) -> tuple[Version, Any]:
    """The version to classify with and a ``LocalClient`` that runs it (the same exported graphs Triton
    serves; a candidate's training artifact runs with torch).

    ``version`` None and no ``candidate``: the version serving now (the highest the config loads).
    ``candidate``: the newest registry entry of the task that was never exported (rejected or pending).
    """
    from pathlib import Path

    from driftline.models.inference.local import LocalClient
    from driftline.models.triton.export import serving_versions
    from driftline.settings import get_settings

    names = {r.model_name for r in routes if r.task == task}
    if len(names) != 1:
        raise ValueError(f"task {task!r} is served by {sorted(names) or 'no model'}; expected one model")
    name = names.pop()
    repository = get_settings().triton.repository
    if candidate:
        from driftline.online.serving.registry import ModelRegistry

        found = [
            r
            for r in ModelRegistry.from_settings().list(name)
            if not r.version and r.artifact_path and Path(r.artifact_path).is_dir()
        ]
        if not found:
            raise ValueError(f"{name}: no candidate with an artifact on disk in the registry")
        newest = max(found, key=lambda r: r.created_ts_ms)
        client = LocalClient({name: newest.artifact_path}, engine="torch-fp32")
        return Version(name, None, f"candidate:{newest.adapter_hash}"), client
    if version is None:
        serving = serving_versions(name, repository)
        if not serving:
            raise ValueError(f"{name}: no serving version under {repository}")
        version = max(serving)
    if not (repository / name / str(version)).is_dir():
        raise ValueError(f"{name}: version {version} is not exported under {repository}")
    return Version(name, str(version), str(version)), LocalClient(repository=repository)


async def rescore_range(
    task: str,
    from_ms: int,
    to_ms: int,
    *,
    version: int | None = None,
    candidate: bool = False,
    chunk: int = 512,
    on_plan: Callable[[str, int], None] | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[RescoreReport, RunCounts]:
    """Re-score ``task``'s input events of ``[from_ms, to_ms)`` (Kafka timestamps), resuming a run.

    ``on_plan(run id, offsets left)`` is called once the range is planned; ``on_chunk(offsets)``
    after every stored chunk (progress bars).
    """
    from aiokafka import AIOKafkaConsumer

    from driftline.clients import clickhouse_client, kafka_client_kwargs
    from driftline.settings import get_settings
    from driftline.streams.routing import load_routes
    from driftline.streams.sinks.clickhouse import ClickHouseSink

    settings = get_settings()
    routes = load_routes(settings)
    chosen, client = resolve_version(task, routes, version, candidate)
    run_id = run_id_for(task, chosen.label, from_ms, to_ms)
    sinks = [
        ClickHouseSink(record.TABLE, record.COLUMNS, settings=settings.clickhouse, max_rows=1 << 30)
        for record in (RescoredRecord, RescoreProgressRecord)
    ]
    rescorer = Rescorer(
        run_id=run_id,
        task=task,
        routes=routes,
        version=chosen,
        client=client,
        rows=sinks[0],
        progress=sinks[1],
        max_bytes=settings.pipeline.max_event_bytes,
        max_text_chars=settings.pipeline.max_text_chars,
        from_ms=from_ms,
        to_ms=to_ms,
    )
    consumer = AIOKafkaConsumer(
        **kafka_client_kwargs(settings),
        group_id=None,
        enable_auto_commit=False,
        fetch_max_bytes=64 << 20,
        max_partition_fetch_bytes=32 << 20,
    )
    ch = clickhouse_client(settings)
    await consumer.start()
    try:
        spans = await plan_spans(consumer, rescorer.topics, from_ms, to_ms)
        spans = rescorer.resume(spans, stored_progress(ch, run_id))
        if on_plan is not None:
            on_plan(run_id, sum(s.size for s in spans))
        counts = await rescorer.run(consumer, spans, chunk, on_chunk)
    finally:
        await consumer.stop()
        await client.close()
        for sink in sinks:
            await sink.close()
    return report(ch, run_id, task, chosen.label), counts
