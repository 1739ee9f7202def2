"""``driftline.streams.services.rescore`` logic without services: ranges, retention, resume, the report.

The range planner runs against a fake consumer that answers ``offsets_for_times`` like Kafka (the
first offset at or after a time, None past the end); the report's SQL runs on chDB with the
migrated schema, and its figures are compared with a Python count over the same rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from driftline.schema.records import FeedbackRecord, PredictionRecord, RescoredRecord, RescoreProgressRecord
from driftline.streams.routing import Route
from driftline.streams.services.rescore import (
    REPORT_SQL,
    OutOfRetention,
    Rescorer,
    Span,
    Version,
    plan_spans,
    run_id_for,
    summarize,
)
from tests.support.analytics_samples import Row, migrated_chdb


@dataclass(frozen=True)
class Found:
    offset: int
    timestamp: int


class FakeConsumer:
    """Partitions as lists of record timestamps; ``first`` offsets were deleted (log start)."""

    def __init__(self, logs: dict[tuple[str, int], list[int]], first: dict[tuple[str, int], int]) -> None:
        self.logs, self.first = logs, first

    async def topics(self) -> set[str]:
        return {t for t, _ in self.logs}

    @property
    def _client(self) -> FakeConsumer:
        return self

    async def _wait_on_metadata(self, topic: str) -> set[int]:
        return {p for t, p in self.logs if t == topic}

    async def beginning_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {tp: self.first.get((tp.topic, tp.partition), 0) for tp in tps}

    async def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {tp: len(self.logs[(tp.topic, tp.partition)]) for tp in tps}

    async def offsets_for_times(self, wanted: dict[Any, int]) -> dict[Any, Found | None]:
        found = {}
        for tp, ts in wanted.items():
            log = self.logs[(tp.topic, tp.partition)]
            start = self.first.get((tp.topic, tp.partition), 0)
            hits = [o for o in range(start, len(log)) if log[o] >= ts]
            found[tp] = Found(hits[0], log[hits[0]]) if hits else None
        return found


LOGS = {("news", 0): [100, 200, 300, 400, 500], ("news", 1): [150, 250, 350]}


async def test_spans_cover_the_offsets_whose_timestamps_are_in_the_range() -> None:
    spans = await plan_spans(FakeConsumer(LOGS, {}), ["news"], 200, 400)
    assert spans == [Span("news", 0, 1, 3), Span("news", 1, 1, 3)]  # times 200, 300 and 250, 350
    spans = await plan_spans(FakeConsumer(LOGS, {}), ["news"], 0, 10_000)
    assert [s.size for s in spans] == [5, 3]
    late = await plan_spans(FakeConsumer(LOGS, {}), ["news"], 9_000, 10_000)
    assert [s.size for s in late] == [0, 0]


async def test_a_range_reaching_into_deleted_offsets_is_refused_with_the_partition() -> None:
    consumer = FakeConsumer(LOGS, {("news", 0): 2})  # offsets 0 and 1 (times 100, 200) deleted
    with pytest.raises(OutOfRetention, match=r"news\[0\].*offsets before 2.*oldest event.*Choose --from"):
        await plan_spans(consumer, ["news"], 150, 400)
    spans = await plan_spans(consumer, ["news"], 300, 450)  # starts at the oldest retained event
    assert spans[0] == Span("news", 0, 2, 4)
    everything_gone = FakeConsumer({("news", 0): [100, 200]}, {("news", 0): 2})
    with pytest.raises(OutOfRetention, match="every event is deleted"):
        await plan_spans(everything_gone, ["news"], 0, 50)


async def test_empty_ranges_and_unknown_topics_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="range is empty"):
        await plan_spans(FakeConsumer(LOGS, {}), ["news"], 400, 400)
    with pytest.raises(ValueError, match="do not exist"):
        await plan_spans(FakeConsumer(LOGS, {}), ["news", "chat"], 0, 10)


def test_the_same_version_and_range_is_the_same_run() -> None:
    assert run_id_for("t", "2", 1, 2) == run_id_for("t", "2", 1, 2)
    assert len({run_id_for("t", "2", 1, 2), run_id_for("t", "3", 1, 2), run_id_for("t", "2", 1, 3)}) == 3


def _rescorer(routes: list[Route]) -> Rescorer:
    return Rescorer(
        run_id="r", task="news_topic", routes=routes, version=Version("m", "1", "1"), client=None, rows=None,
        progress=None, max_bytes=1, max_text_chars=1, from_ms=0, to_ms=1,
    )  # type: ignore[arg-type]  # fmt: skip


def test_resume_continues_from_stored_progress_with_the_first_start_and_end() -> None:
    rescorer = _rescorer([Route(topic="news", schema_kind="news", task="news_topic")])
    mark = RescoreProgressRecord(
        run_id="r", task="news_topic", model_version="1", topic="news", partition=0, start_offset=10,
        next_offset=40, end_offset=50, from_ts_ms=0, to_ts_ms=1,
    )  # fmt: skip
    planned = [Span("news", 0, 10, 70), Span("news", 1, 5, 9)]  # partition 0 grew since; its end stays
    assert rescorer.resume(planned, [mark]) == [Span("news", 0, 40, 50), Span("news", 1, 5, 9)]
    assert rescorer.starts == {("news", 0): 10}
    with pytest.raises(ValueError, match="no input topic"):
        _rescorer([Route(topic="chat", schema_kind="chat", task="chat_sentiment")])


def _groups() -> list[tuple[str, str, str, int]]:
    # (rescored, original, truth, events)
    return [
        ("sport", "sport", "sport", 4), ("tech", "sport", "tech", 2), ("tech", "tech", "", 3),
        ("sport", "", "sport", 1), ("business", "tech", "tech", 2),
    ]  # fmt: skip


def test_summary_counts_agreement_accuracy_and_label_mix() -> None:
    r = summarize("r", "news_topic", "2", _groups())
    assert (r.events, r.compared, r.graded) == (12, 11, 9)
    assert r.agreement == pytest.approx(7 / 11)
    assert r.accuracy_original == pytest.approx(6 / 8)  # graded events with an original label
    assert r.accuracy_rescored == pytest.approx(7 / 9)
    assert r.label_mix["sport"] == {"original": pytest.approx(6 / 11), "rescored": pytest.approx(4 / 11)}
    assert r.label_mix["business"]["original"] == 0
    assert r.mix_change == pytest.approx(2 / 11)  # sport -2, tech 0, business +2 -> (2+0+2)/2/11
    empty = summarize("r", "t", "1", [])
    assert (empty.events, empty.agreement, empty.accuracy_rescored, empty.mix_change) == (0, None, None, 0)


@pytest.fixture(scope="module")
def chdb() -> Iterator[Any]:
    with migrated_chdb("rescore_sql") as sess:
        yield sess


def test_the_report_query_runs_on_modern_clickhouse_and_matches_a_python_count(chdb: Any) -> None:
    rows: list[Any] = []
    expected = []
    for i, (rescored, original, truth, n) in enumerate(_groups()):
        for j in range(n):
            event = f"e{i}-{j}"
            rows.append(RescoredRecord(run_id="run1", task="news_topic", event_id=event, topic="news",
                                       partition=0, offset=j, event_ts_ms=1_700_000_000_000, model_name="m",
                                       model_version="2", adapter_hash="h", label=rescored, confidence=0.9,
                                       label_names=[rescored], probabilities=[0.9]))  # fmt: skip
            if original:
                rows.append(_label(event, original))
            if truth:
                rows.append(FeedbackRecord(task="news_topic", event_id=event, label=truth, source="s",
                                           feedback_ts_ms=1_700_000_000_000, predicted_label=original or "x",
                                           correct=truth == original))  # fmt: skip
            expected.append((rescored, original, truth))
    # another run and another task must not count
    rows.append(RescoredRecord(run_id="run2", task="news_topic", event_id="e0-0", topic="news", partition=0,
                               offset=0, event_ts_ms=1_700_000_000_000, model_name="m", model_version="3",
                               adapter_hash="h", label="tech", confidence=0.9, label_names=["tech"],
                               probabilities=[0.9]))  # fmt: skip
    for row in rows:
        chdb.query(Row.of(row).sql())
    sql = REPORT_SQL.replace("%(run)s", "'run1'").replace("%(task)s", "'news_topic'")
    data = json.loads(str(chdb.query(sql, "JSON")))["data"]
    groups = [(d["rescored"], d["original"], d["truth"], int(d["n"])) for d in data]
    assert sorted(groups) == sorted(_groups())
    assert summarize("run1", "news_topic", "2", groups) == summarize("run1", "news_topic", "2", _groups())


def _label(event_id: str, label: str) -> PredictionRecord:
    return PredictionRecord(
        event_id=event_id, task="news_topic", event_kind="news", subject=label, topic="news", partition=0,
        offset=0, event_ts_ms=1_700_000_000_000, processed_ts_ms=1_700_000_000_500, text="x", source="s",
        channel="c", language="en", label=label, confidence=0.9, label_names=[label], probabilities=[0.9],
        explanation=[], model_name="m", model_version="1", adapter_hash="h", truncated=False, latency_ms=1.0,
    )  # fmt: skip


@pytest.fixture
def repository(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Triton repository of the test's own (settings rebuilt before and after)."""
    from driftline.settings import get_settings

    monkeypatch.setenv("DRIFTLINE_TRITON__REPOSITORY", str(tmp_path / "repo"))
    get_settings.cache_clear()
    yield tmp_path / "repo"
    monkeypatch.undo()
    get_settings.cache_clear()


def test_version_resolution_serving_explicit_and_candidate(repository, tmp_path, monkeypatch) -> None:
    """Serving = the highest version the config loads; --candidate = the newest never-exported entry
    whose artifact is still on disk, run from that artifact."""
    from driftline.online.serving.registry import ModelRegistry
    from driftline.schema.records import ModelRecord, ModelStatus
    from driftline.streams.services.rescore import resolve_version

    routes = [Route(topic="news", schema_kind="news", task="news_topic", model="m")]
    for v in (1, 2):
        (repository / "m" / str(v)).mkdir(parents=True)
    monkeypatch.setattr("driftline.models.triton.export.serving_versions", lambda name, repository=None: [1])
    chosen, _ = resolve_version("news_topic", routes, None, False)
    assert chosen == Version("m", "1", "1")
    assert resolve_version("news_topic", routes, 2, False)[0] == Version("m", "2", "2")
    with pytest.raises(ValueError, match="version 7 is not exported"):
        resolve_version("news_topic", routes, 7, False)

    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    rows = [
        ModelRecord(task="m", adapter_hash="a1", status=ModelStatus.REJECTED, artifact_path=str(old),
                    created_ts_ms=1),
        ModelRecord(task="m", adapter_hash="a2", status=ModelStatus.REJECTED, artifact_path=str(new),
                    created_ts_ms=2),
        ModelRecord(task="m", adapter_hash="gone", status=ModelStatus.CANDIDATE,
                    artifact_path=str(tmp_path / "deleted"), created_ts_ms=3),
        ModelRecord(task="m", version=2, adapter_hash="v2", status=ModelStatus.SERVING, created_ts_ms=4),
    ]  # fmt: skip

    class Registry:
        def list(self, task):
            return rows

    monkeypatch.setattr(ModelRegistry, "from_settings", classmethod(lambda cls: Registry()))
    chosen, client = resolve_version("news_topic", routes, None, True)
    assert chosen == Version("m", None, "candidate:a2") and client._artifacts == {"m": new}
    rows[:] = rows[2:]
    with pytest.raises(ValueError, match="no candidate"):
        resolve_version("news_topic", routes, None, True)
