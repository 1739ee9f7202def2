"""The explainer service against the real Kafka and ClickHouse, with a small exported model.

Prediction records go to a private predictions topic; the service (in-process, its own consumer
group) must write an ``explanations`` row for exactly the events the task's policy selects (the
uncertain ones and the hash-sampled confident ones), with words of the event's text computed from
the version folder's weights, an error row for a version whose folder is gone, nothing for the
rest, and then commit its offsets. A label request for an event the policy skips is explained too
(reason ``label_request``); one for an event the policy selects is not explained twice.
ClickHouse is a throwaway database migrated from the package.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from driftline.apps.testing.harness import settings_for, unique_suffix
from driftline.clients import kafka_consumer, kafka_producer
from driftline.kafka_admin import create_missing_topics
from driftline.models.artifacts import read_meta
from driftline.models.explain.policy import sampled
from driftline.models.explain.pool import ExplainerPool
from driftline.models.tasks import get_task
from driftline.schema.records import ExplanationRecord, LabelRequestRecord, PredictionRecord
from driftline.settings import Settings
from driftline.streams.services.explanations import ExplainerService
from driftline.streams.sinks.clickhouse import explanations_sink
from tests.conftest import migrated_database
from tests.support.serving_support import small_artifact

pytestmark = pytest.mark.stack

TASK = "news_topic"
TEXTS = [
    "Stocks rallied as the central bank cut interest rates",
    "The striker scored twice in the cup final",
    "A new smartphone chip doubles battery life",
    "Parliament votes on the budget after a long debate",
    "The film festival opened with a sold-out premiere",
]


def _prediction(i: int, event_id: str, confidence: float, model: str, version: str) -> PredictionRecord:
    labels = get_task(TASK).labels
    return PredictionRecord(
        event_id=event_id, task=TASK, event_kind="news", subject="x", topic="in", partition=0, offset=i,
        event_ts_ms=1_700_000_000_000 + i, processed_ts_ms=1_700_000_001_000 + i, text=TEXTS[i % len(TEXTS)],
        source="test", channel="", language="en", label=labels[i % len(labels)], confidence=confidence,
        label_names=labels, probabilities=[1.0 / len(labels)] * len(labels), explanation=[],
        model_name=model, model_version=version, adapter_hash="", truncated=False, latency_ms=1.0,
    )  # fmt: skip


def _label_request(p: PredictionRecord) -> LabelRequestRecord:
    return LabelRequestRecord(
        task=p.task, event_id=p.event_id, text=p.text, label=p.label, confidence=p.confidence,
        label_names=p.label_names, probabilities=p.probabilities, model_name=p.model_name,
        model_version=p.model_version, reason="random", uncertainty=0.5, sampling_probability=0.05,
        event_ts_ms=p.event_ts_ms,
    )  # fmt: skip


def _sampled_id(run: str, want: bool) -> str:
    rate = get_task(TASK).explain.sample_rate
    return next(f"{run}-{n}" for n in range(100_000) if sampled(TASK, f"{run}-{n}", rate) is want)


async def _committed(settings: Settings, topic: str, partitions: int) -> int:
    """The offsets the explainer's group committed on ``topic``, summed over its partitions."""
    group = settings.explainer.group_id
    consumer = kafka_consumer(settings=settings, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return sum([(await consumer.committed(TopicPartition(topic, p))) or 0 for p in range(partitions)])
    finally:
        await consumer.stop()


async def test_explains_exactly_the_selected_events_and_records_a_missing_version(tmp_path: Path) -> None:
    base = settings_for(dict(os.environ))
    model = unique_suffix("test_explainer_")
    artifact = small_artifact(TASK)
    shutil.copytree(artifact, tmp_path / model / "1")
    with migrated_database(base, "explainer_") as ch:
        database = ch.execute("SELECT currentDatabase()")[0][0]
        topic = unique_suffix("test.predictions.")
        requests_topic = unique_suffix("test.label-requests.")
        settings = settings_for({
            **os.environ, "DRIFTLINE_CLICKHOUSE__DATABASE": database,
            "DRIFTLINE_KAFKA__TOPICS__PREDICTIONS": topic,
            "DRIFTLINE_KAFKA__TOPICS__LABEL_REQUESTS": requests_topic,
            "DRIFTLINE_EXPLAINER__GROUP_ID": unique_suffix("test-explainer-"),
            "DRIFTLINE_EXPLAINER__AUTO_OFFSET_RESET": "earliest", "DRIFTLINE_EXPLAINER__POLL_S": "0.2",
            "DRIFTLINE_EXPLAINER__MAX_BATCH": "4", "DRIFTLINE_TRITON__REPOSITORY": str(tmp_path),
        })  # fmt: skip
        threshold = get_task(TASK).explain.confidence_below
        run = unique_suffix("ev")
        uncertain = [(f"{run}-u{i}", c) for i, c in enumerate([0.2, 0.45, threshold - 0.01])]
        sampled_confident = (_sampled_id(run, True), 0.97)
        skipped = [(_sampled_id(f"{run}s{i}", False), c) for i, c in enumerate([threshold, 0.9, 0.99])]
        events = [*uncertain, sampled_confident, *skipped]
        records = [_prediction(i, event_id, c, model, "1") for i, (event_id, c) in enumerate(events)]
        gone = _prediction(len(records), f"{run}-gone", 0.3, model, "7")  # no folder for version 7
        values = [r.model_dump_json().encode() for r in [*records, gone]] + [b"not a prediction"]

        asked = [records[len(uncertain) + 1], records[0]]  # skipped by the policy; already uncertain
        asked_values = [_label_request(r).model_dump_json().encode() for r in asked]

        await create_missing_topics(settings, [topic, requests_topic], partitions=2)
        producer = kafka_producer(settings)
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(topic, value, key=value[:16])
            for value in asked_values:
                await producer.send_and_wait(requests_topic, value, key=value[:16])
        finally:
            await producer.stop()

        pool = ExplainerPool(tmp_path, capacity=2, num_threads=1)
        sink = explanations_sink(settings=settings.clickhouse, max_age_s=0.1, backoff_s=0.05)
        service = ExplainerService(settings, pool, sink)
        stop = asyncio.Event()
        running = asyncio.create_task(service.run(stop))
        expected = {event_id for event_id, _ in uncertain} | {sampled_confident[0], gone.event_id}
        expected |= {asked[0].event_id}
        n_read = len(values) + len(asked_values)
        columns = ", ".join(ExplanationRecord.COLUMNS)
        rows: list[ExplanationRecord] = []
        for _ in range(300):
            rows = [
                ExplanationRecord.from_row(r) for r in ch.execute(f"SELECT {columns} FROM explanations FINAL")
            ]
            if (service.totals["read"] >= n_read and len(rows) >= len(expected)) or running.done():
                break
            await asyncio.sleep(0.3)
        await asyncio.sleep(0.5)  # anything more (a wrongly selected event) would have landed by now
        stop.set()
        await asyncio.wait_for(running, 30)
        rows = [
            ExplanationRecord.from_row(r) for r in ch.execute(f"SELECT {columns} FROM explanations FINAL")
        ]

        by_id = {r.event_id: r for r in rows}
        assert set(by_id) == expected
        assert {by_id[e].reason for e, _ in uncertain} == {"uncertain"}
        assert by_id[sampled_confident[0]].reason == "sample"
        assert by_id[asked[0].event_id].reason == "label_request"
        assert service.totals["selected"] == len(expected)  # the uncertain request was not explained twice
        text_of = {r.event_id: r for r in records}
        meta_hash = read_meta(artifact).adapter_hash
        for event_id in expected - {gone.event_id}:
            row = by_id[event_id]
            assert row.error == "" and row.explanation, row
            assert all(word in text_of[event_id].text for word, _ in row.explanation)
            assert (
                row.label == text_of[event_id].label and row.model_name == model and row.model_version == "1"
            )
            assert row.adapter_hash == meta_hash and row.method == "grad_x_input" and row.latency_ms > 0
        missing = by_id[gone.event_id]
        assert (
            missing.explanation == [] and "does not exist" in missing.error and missing.model_version == "7"
        )
        assert service.totals["unreadable"] == 1
        assert await _committed(settings, topic, 2) == len(values)  # every offset committed, junk included
        assert await _committed(settings, requests_topic, 2) == len(asked_values)
