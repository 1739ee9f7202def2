"""``driftline rescore`` against real Kafka and ClickHouse, with an exported version.

Events are produced with chosen Kafka timestamps: before, inside and after a range, plus two
undecodable messages inside it. Original ``labels`` rows (half of them deliberately different
from the model) and feedback for some events are planted. The run is interrupted after its first
chunk and started again: it must resume (read less than the range), store each event of the range
exactly once under FINAL, and report agreement and accuracy equal to what the same version
computes directly. Deleting the start of a partition (``delete_records``) must make the same range
refused, while a later range still runs through the CLI.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.apps.testing.harness import REPO_ROOT, PipelineRun, ServedModel, clickhouse, served_model
from driftline.models.datasets import load_dataset
from driftline.models.inference.base import Prediction
from driftline.models.inference.local import LocalClient
from driftline.schema.events import NewsEvent
from driftline.schema.records import FeedbackRecord, PredictionRecord, insert_sql
from driftline.schema.timestamps import now_ms
from driftline.settings import get_settings
from driftline.streams.services.rescore import OutOfRetention, rescore_range
from tests.support.serving_support import decided

pytestmark = pytest.mark.stack

BEFORE, INSIDE, AFTER, GRADED = 12, 40, 10, 20


class Interrupted(Exception):
    """Stands in for a crash or Ctrl-C after the first stored chunk."""


@pytest.fixture(scope="module")
def news_model() -> Iterator[ServedModel]:
    with served_model("news_topic") as model:
        yield model


def _produce(run: PipelineRun, messages: list[tuple[bytes, bytes, int]]) -> list[tuple[int, int]]:
    """(key, value, Kafka timestamp) -> (partition, offset) each."""
    from driftline.clients import kafka_producer

    async def send() -> list[tuple[int, int]]:
        producer = kafka_producer(run.settings)
        await producer.start()
        try:
            sent = [
                await producer.send_and_wait(run.topics.news, v, key=k, timestamp_ms=t)
                for k, v, t in messages
            ]
        finally:
            await producer.stop()
        return [(m.partition, m.offset) for m in sent]

    return asyncio.run(send())


def _delete_before(run: PipelineRun, partition: int, offset: int) -> None:
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

    from driftline.clients import kafka_client_kwargs

    async def delete() -> None:
        admin = AIOKafkaAdminClient(**kafka_client_kwargs(run.settings))
        await admin.start()
        try:
            await admin.delete_records({TopicPartition(run.topics.news, partition): RecordsToDelete(offset)})
        finally:
            await admin.close()

    asyncio.run(delete())


def test_rescore_resumes_matches_the_version_and_refuses_deleted_offsets(
    news_model: ServedModel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run = PipelineRun(routes={"news": f"news_topic@{news_model.name}", "chat": "-"})
    s = run.suffix
    for key, value in run.env().items():
        if key.startswith("DRIFTLINE_"):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        _run(run, s, news_model, tmp_path)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def _run(run: PipelineRun, s: str, model: ServedModel, tmp_path: Path) -> None:
    test = load_dataset("bbc_news").split("test")[: BEFORE + INSIDE + AFTER]
    base = now_ms() - 3_600_000
    start, end = base + 10_000, base + 20_000
    events, messages = [], []
    for i, example in enumerate(test):
        ts = base + i if i < BEFORE else start + i if i < BEFORE + INSIDE else end + i
        event = {
            "id": f"{s}-e{i}",
            "timestamp": ts / 1000,
            "source": "test",
            "title": "",
            "body": example.text[:1500],
        }
        events.append((event, example.label, ts))
        messages.append((event["id"].encode(), json.dumps(event).encode(), ts))
    messages += [(b"bad", b"not json", start + 1), (b"bad", b'{"id": "x"}', start + 2)]
    run.create_topics(partitions=2)
    where = _produce(run, messages)
    inside = events[BEFORE : BEFORE + INSIDE]

    # originals: the true label for even events, a wrong one for odd; feedback for the first GRADED
    labels = sorted({label for _, label, _ in events})
    planted, now = [], now_ms()
    for i, (event, label, ts) in enumerate(inside):
        original = label if i % 2 == 0 else next(x for x in labels if x != label)
        planted.append((event["id"], original))
        record = PredictionRecord(
            event_id=event["id"], task="news_topic", event_kind="news", subject=original,
            topic=run.topics.news, partition=0, offset=0, event_ts_ms=ts, processed_ts_ms=now, text="t",
            source="test", channel="test", language="en", label=original, confidence=0.5,
            label_names=[original], probabilities=[1.0], explanation=[], model_name=model.name,
            model_version=model.version, adapter_hash=model.adapter_hash, truncated=False, latency_ms=1.0,
        )  # fmt: skip
        clickhouse().execute(insert_sql(record.TABLE, record.COLUMNS), [record.to_row()], types_check=False)
    for event, label, _ in inside[:GRADED]:
        fb = FeedbackRecord(task="news_topic", event_id=event["id"], label=label, source="test",
                            feedback_ts_ms=now, predicted_label="x", correct=False)  # fmt: skip
        clickhouse().execute(insert_sql(fb.TABLE, fb.COLUMNS), [fb.to_row()], types_check=False)

    # what the version says, computed directly
    async def direct() -> list[Prediction]:
        async with LocalClient(repository=get_settings().triton.repository) as client:
            texts = [NewsEvent.model_validate(e).text for e, _, _ in inside]
            return await client.predict(model.name, texts, model.version)

    answers = asyncio.run(direct())
    predicted = [p.label for p in answers]

    chunks = []

    def interrupt(offsets: int) -> None:
        chunks.append(offsets)
        raise Interrupted

    version = int(model.version)
    with pytest.raises(Interrupted):
        asyncio.run(rescore_range("news_topic", start, end, version=version, chunk=8, on_chunk=interrupt))
    report, counts = asyncio.run(rescore_range("news_topic", start, end, version=version, chunk=8))
    run_id = report.run_id
    stored = clickhouse().execute(
        "SELECT event_id, label, model_version FROM rescored_labels FINAL WHERE run_id = %(r)s", {"r": run_id}
    )
    assert sorted(r[0] for r in stored) == sorted(e["id"] for e, _, _ in inside), (
        "each event of the range once"
    )
    assert {r[2] for r in stored} == {model.version}
    # the version's own answers, wherever they are not a tie (chunks of 8 pad otherwise than one call)
    rescored = dict((r[0], r[1]) for r in stored)
    pairs = zip(inside, answers, strict=True)
    clear = {e["id"]: p.label for (e, _, _), p in pairs if decided(p.probabilities, p.engine)}
    assert len(clear) >= INSIDE // 2 and {i: rescored[i] for i in clear} == clear
    assert 0 < counts.read < INSIDE + 2, (
        f"the second start re-read the range: {counts.read} (first: {chunks})"
    )
    assert sum(counts.skipped.values()) <= 2
    progress = clickhouse().execute(
        "SELECT next_offset, end_offset FROM rescore_progress FINAL WHERE run_id = %(r)s", {"r": run_id}
    )
    assert len(progress) == 2 and all(n >= e for n, e in progress)

    truths = [label for _, label, _ in inside]
    originals = [o for _, o in planted]
    assert report.events == INSIDE and report.compared == INSIDE and report.graded == GRADED
    assert report.agreement == pytest.approx(
        sum(p == o for p, o in zip(predicted, originals, strict=True)) / INSIDE
    )
    assert report.accuracy_rescored == pytest.approx(
        sum(p == t for p, t in zip(predicted[:GRADED], truths[:GRADED], strict=True)) / GRADED
    )
    assert report.accuracy_original == pytest.approx(0.5)  # even events right, odd wrong
    assert sum(m["rescored"] for m in report.label_mix.values()) == pytest.approx(1.0)

    # the start of partition 0's range is deleted: the same range is refused, a later one runs
    first_inside = min(
        o
        for (p, o), (_, _, ts) in zip(where[: len(events)], events, strict=True)
        if p == 0 and start <= ts < end
    )
    _delete_before(run, 0, first_inside + 1)
    with pytest.raises(OutOfRetention, match=rf"{run.topics.news}\[0\]"):
        asyncio.run(rescore_range("news_topic", start, end, version=version))
    out = tmp_path / "later.json"
    cli = subprocess.run(
        [sys.executable, "-m", "driftline.apps.cli", "rescore", "--task", "news_topic", "--from", str(end),
         "--to", str(end + 10_000), "--version", model.version, "--json", str(out)],
        cwd=REPO_ROOT, env=run.env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stdout + cli.stderr
    later = json.loads(out.read_text())
    assert later["events"] == AFTER and later["this_run"]["rescored"] == AFTER
    refused = subprocess.run(
        [sys.executable, "-m", "driftline.apps.cli", "rescore", "--task", "news_topic", "--from", str(start),
         "--to", str(end), "--version", model.version],
        cwd=REPO_ROOT, env=run.env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert refused.returncode == 2 and "deleted (retention)" in refused.stdout, (
        refused.stdout + refused.stderr
    )
