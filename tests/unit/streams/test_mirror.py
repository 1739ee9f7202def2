"""The workers' shadow mirror (streams.mirror): a stable share of events goes to the shadow off the
batch path, both answers are stored, and readiness is asked at most once per check.
"""

from __future__ import annotations

import asyncio

from driftline.models.inference.base import InferenceClient, Prediction
from driftline.schema.records import PredictionRecord, ShadowRecord
from driftline.streams.mirror import ShadowMirror, mirrored


class FakeClient(InferenceClient):
    """A shadow that answers 'tech' (version 2); readiness and failures are switchable."""

    def __init__(self) -> None:
        self.ready, self.calls, self.release = True, [], asyncio.Event()

    async def predict(self, task, texts, version=None):
        self.calls.append((task, list(texts)))
        await self.release.wait()
        return [Prediction("tech", {"sport": 0.2, "tech": 0.8}, [], task, "2", "h2") for _ in texts]

    async def is_ready(self, task, version=None) -> bool:
        return self.ready


class ListSink:
    def __init__(self) -> None:
        self.rows = []

    async def add(self, rows, on_stored=None, origins=None) -> None:
        self.rows += rows


def _record(i: int) -> PredictionRecord:
    return PredictionRecord(
        event_id=f"e{i}", task="news_topic", event_kind="news", subject="sport", topic="t", partition=0,
        offset=i, event_ts_ms=1_700_000_000_000, processed_ts_ms=1_700_000_000_100, text=f"text {i}",
        source="s", channel="c", language="en", label="sport", confidence=0.7, label_names=["sport", "tech"],
        probabilities=[0.7, 0.3], explanation=[], model_name="m", model_version="1", adapter_hash="h1",
        truncated=False, latency_ms=1.0,
    )  # fmt: skip


def test_the_mirrored_share_is_stable_and_about_the_share() -> None:
    ids = [f"event-{i}" for i in range(20_000)]
    picked = [i for i in ids if mirrored(i, 0.1)]
    assert 0.09 < len(picked) / len(ids) < 0.11
    assert picked == [i for i in ids if mirrored(i, 0.1)]  # same events every time, every worker
    assert set(picked) <= {i for i in ids if mirrored(i, 0.3)}  # a larger share keeps these
    assert not any(mirrored(i, 0.0) for i in ids[:100])


async def test_the_mirror_sends_the_chosen_events_off_the_batch_path_and_stores_both_answers() -> None:
    client, sink = FakeClient(), ListSink()
    mirror = ShadowMirror(client, sink, share=0.5, check_s=60, max_in_flight=1)
    batch = [_record(i) for i in range(40)]
    await mirror(batch)  # returns while the shadow is still answering
    await asyncio.sleep(0)  # the mirror task starts
    assert client.calls and client.calls[0][0] == "m__shadow" and not sink.rows
    chosen = [r for r in batch if mirrored(r.event_id, 0.5)]
    assert client.calls[0][1] == [r.text for r in chosen]
    await mirror(batch)  # one mirror in flight already: this batch is skipped, counted
    assert mirror.skipped == len(chosen) and len(client.calls) == 1
    client.release.set()
    await mirror.close()
    rows = [dict(zip(ShadowRecord.COLUMNS, row, strict=True)) for row in sink.rows]
    assert [r["event_id"] for r in rows] == [r.event_id for r in chosen]
    assert {
        (r["serving_version"], r["serving_label"], r["shadow_version"], r["shadow_label"]) for r in rows
    } == {("1", "sport", "2", "tech")}


async def test_no_shadow_no_mirror_and_readiness_is_asked_at_most_every_check() -> None:
    client, sink = FakeClient(), ListSink()
    client.ready = False
    now = [0.0]
    mirror = ShadowMirror(client, sink, share=1.0, check_s=10, clock=lambda: now[0])
    await mirror([_record(1)])
    client.ready = True
    await mirror([_record(2)])  # still the cached answer: no shadow
    assert client.calls == []
    now[0] = 11.0
    client.release.set()
    await mirror([_record(3)])
    await mirror.close()
    assert [c[1] for c in client.calls] == [["text 3"]]
