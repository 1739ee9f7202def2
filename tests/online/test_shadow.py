"""The shadow phase without services: the decision, the workers' mirror, the shadow's folder."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from driftline.models.inference.base import InferenceClient, Prediction
from driftline.online.config import ShadowConfig
from driftline.online.gates.promotion import Paired, Verdict
from driftline.online.gates.shadow_gate import ShadowEvidence, judge_shadow
from driftline.schema.records import PredictionRecord, ShadowRecord
from driftline.streams.mirror import ShadowMirror, mirrored

CONFIG = ShadowConfig(enabled=True, min_events=100, min_time_s=60, min_labels=10, max_time_s=600)


def _evidence(elapsed=120.0, mirrored_=150, agreed=140, shadow=None, serving=None) -> ShadowEvidence:
    shadow = [True] * 18 + [False] * 2 if shadow is None else shadow
    serving = [True] * 17 + [False] * 3 if serving is None else serving
    return ShadowEvidence(elapsed, mirrored_, agreed, Paired.of(shadow, serving), sum(shadow), sum(serving))


def test_enough_traffic_and_labels_not_worse_promotes() -> None:
    decision = judge_shadow(_evidence(), CONFIG)
    assert decision.verdict is Verdict.PROMOTE
    assert decision.metrics["shadow_agreement"] == pytest.approx(140 / 150, abs=1e-4)
    assert decision.metrics["shadow_graded"] == 20 and decision.metrics["shadow_accuracy"] == 0.9


def test_it_waits_for_traffic_or_time_and_for_labels_then_gives_up() -> None:
    assert judge_shadow(_evidence(elapsed=10, mirrored_=50), CONFIG).wait  # neither 100 events nor 60 s
    assert not judge_shadow(_evidence(elapsed=61, mirrored_=50), CONFIG).wait  # time is enough
    few = _evidence(shadow=[True] * 5, serving=[True] * 5)
    assert judge_shadow(few, CONFIG).wait  # 5 labels < 10
    late = judge_shadow(_evidence(elapsed=601, shadow=[True] * 5, serving=[True] * 5), CONFIG)
    assert late.verdict is Verdict.REJECT and "too little live evidence" in late.reason


def test_low_agreement_or_worse_live_accuracy_rejects() -> None:
    disagrees = judge_shadow(_evidence(agreed=30), CONFIG)
    assert disagrees.verdict is Verdict.REJECT and "agrees with serving on 20.0%" in disagrees.reason
    worse = judge_shadow(_evidence(shadow=[False] * 10 + [True] * 10, serving=[True] * 20), CONFIG)
    assert worse.verdict is Verdict.REJECT and worse.metrics["shadow_p_worse"] < 0.05
    slightly = judge_shadow(
        _evidence(shadow=[True] * 16 + [False] * 4, serving=[True] * 17 + [False] * 3), CONFIG
    )
    assert slightly.verdict is Verdict.REJECT  # 0.80 vs 0.85: beyond the 0.02 tolerance


def test_the_mirrored_share_is_stable_and_about_the_share() -> None:
    ids = [f"event-{i}" for i in range(20_000)]
    picked = [i for i in ids if mirrored(i, 0.1)]
    assert 0.09 < len(picked) / len(ids) < 0.11
    assert picked == [i for i in ids if mirrored(i, 0.1)]  # same events every time, every worker
    assert set(picked) <= {i for i in ids if mirrored(i, 0.3)}  # a larger share keeps these
    assert not any(mirrored(i, 0.0) for i in ids[:100])


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


def test_the_shadow_folder_serves_only_the_candidate(tmp_path: Path) -> None:
    from driftline.models.artifacts import ArtifactMeta, write_meta
    from driftline.models.triton.export import read_config
    from driftline.models.triton.shadow_model import remove_shadow, shadow_name, write_shadow

    model = tmp_path / "m"
    for version in (1, 2):
        (model / str(version)).mkdir(parents=True)
        meta = ArtifactMeta(task="news_topic", labels=["a", "b"], encoder="minilm", max_length=64,
                            adapter_hash=f"h{version}", engine="ort-fp32")  # fmt: skip
        write_meta(model / str(version), meta)
    (model / "config.pbtxt").write_text(
        'name: "m"\nbackend: "python"\nversion_policy { specific { versions: 1 } }\n'
        'parameters { key: "versions" value { string_value: "{}" } }\n'
    )
    with pytest.raises(FileNotFoundError):
        write_shadow("m", 3, tmp_path)
    folder = write_shadow("m", 2, tmp_path)
    assert folder == tmp_path / shadow_name("m") and (folder / "2" / "meta.json").is_file()
    config = read_config(folder / "config.pbtxt")
    assert config.name == "m__shadow" and list(config.version_policy.specific.versions) == [2]
    assert list(json.loads(config.parameters["versions"].string_value)) == ["2"]
    assert list(read_config(model / "config.pbtxt").version_policy.specific.versions) == [1]  # untouched
    remove_shadow("m", tmp_path)
    assert not folder.exists()


def test_the_shadow_phase_is_the_default_where_it_can_be_judged() -> None:
    """On by default; it needs a registry (the shadow's state), a swapper and live evidence (the
    ClickHouse source's ``graded_since``), else the updater promotes straight after the gate."""
    from driftline.online.update.sources import ClickHouseSource, ListSource
    from driftline.online.update.updater import Updater

    live, registry, swapper = ClickHouseSource(client=None), object(), object()
    full = Updater("news_topic", source=live, registry=registry, swapper=swapper)
    assert full.shadow_config.enabled and full.shadowing
    assert not Updater("news_topic", source=ListSource(), registry=registry, swapper=swapper).shadowing
    assert not Updater("news_topic", source=live, swapper=swapper).shadowing
    full.shadow_config = ShadowConfig(enabled=False)
    assert not full.shadowing
