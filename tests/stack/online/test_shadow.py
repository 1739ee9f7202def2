"""The shadow phase on the real stack: Triton, a real worker, Kafka, ClickHouse.

Version 1 (the task's small test classifier) serves a model of its own name; a candidate that
passed the offline gate starts as its shadow (``Updater._start_shadow``: exported as version 2,
unserved, and loaded as ``<model>__shadow``).

1. A worker mirrors half of the events (by event id) to the shadow: ``shadow_predictions`` holds
   exactly the mirrored events with version 2's answers, while every published prediction and every
   ``labels`` row is still version 1's. Feedback for the events arrives through Kafka.
2. ``check_shadow`` waits while labels are short, then promotes: Triton serves version 2, the
   shadow is unloaded and its folder gone, and the registry row carries the offline and the
   shadow evidence together.
3. A bad candidate (head rows rotated) as the next shadow is rejected on agreement: version 2
   keeps serving, version 3 is recorded rejected.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.apps.testing.harness import PipelineRun, clickhouse, news_messages, wait_for
from driftline.settings import Settings
from tests.conftest import unique_suffix

pytestmark = [pytest.mark.stack]

TASK = "news_topic"
N_EVENTS = 60


@pytest.fixture
def artifacts(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """The test classifier, and a copy with its head rows rotated (confidently wrong)."""
    import torch
    from safetensors.torch import load_file, save_file

    from driftline.apps.testing.harness import pipeline_artifact
    from driftline.models.artifacts import HEAD_FILE, content_hash, update_meta

    good = pipeline_artifact(TASK)
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    head = load_file(bad / HEAD_FILE)
    save_file({k: torch.roll(v, shifts=1, dims=0).contiguous() for k, v in head.items()}, bad / HEAD_FILE)
    update_meta(bad, adapter_hash=content_hash(bad))
    yield good, bad


def _candidate(artifact: Path, reason: str):
    from driftline.models.artifacts import read_meta
    from driftline.online.gates.promotion import Decision, Verdict
    from driftline.online.update.updater import Candidate

    decision = Decision(Verdict.PROMOTE, reason, {"accuracy": 0.9, "baseline_accuracy": 0.6, "fit": "lora"})
    return Candidate(artifact, read_meta(artifact), decision, 0, 0, 0.0, 0.0)


def _record(name: str, candidate) -> object:
    from driftline.schema.records import ModelRecord, ModelStatus

    return ModelRecord(
        task=name, adapter_hash=candidate.meta.adapter_hash, status=ModelStatus.PROMOTED,
        metrics={**candidate.decision.metrics, "parent_version": 1}, reason=candidate.decision.reason,
        artifact_path=str(candidate.artifact),
    )  # fmt: skip


def _feedback(event_id: str, label: str) -> dict:
    return {"event_id": event_id, "task": TASK, "label": label, "source": "test", "timestamp": time.time()}


def _events(run: PipelineRun, prefix: str, count: int) -> tuple[list[tuple[bytes, bytes]], list[str]]:
    from driftline.models.datasets import load_dataset

    test = load_dataset("bbc_news").split("test")[:count]
    messages = news_messages((f"{run.suffix}-{prefix}{i}", e.text[:1500]) for i, e in enumerate(test))
    return messages, [e.label for e in test]


def test_shadow_mirrors_live_traffic_then_promotes_or_rejects(
    settings: Settings, artifacts: tuple[Path, Path], tmp_path: Path
) -> None:
    from driftline.models.triton.export import export
    from driftline.models.triton.shadow_model import shadow_name
    from driftline.online.config import ShadowConfig, online_config
    from driftline.online.serving.registry import ModelRegistry
    from driftline.online.serving.swap import TritonSwapper
    from driftline.online.update.sources import ClickHouseSource
    from driftline.online.update.updater import UpdateOutcome, Updater
    from driftline.schema.records import ModelStatus
    from driftline.streams.mirror import mirrored

    good, bad = artifacts
    name = unique_suffix("shadowtest_")
    repo = settings.triton.repository
    swapper = TritonSwapper(drain_quiet_s=0.5, drain_timeout_s=5, ready_timeout_s=90)
    db = clickhouse()
    registry = ModelRegistry(db)
    published: list[dict] = []
    updater = Updater(
        TASK, source=ClickHouseSource(db), registry=registry, swapper=swapper, publish=published.append,
        config=online_config(TASK).updater.model_copy(update={"model_name": name}), progress=False,
    )  # fmt: skip
    updater.shadow_config = ShadowConfig(
        enabled=True, min_events=10, min_time_s=0, min_labels=20, max_time_s=600
    )
    run = PipelineRun(
        routes={"news": f"{TASK}@{name}", "chat": "-"},
        extra_env={"DRIFTLINE_PIPELINE__SHADOW_SHARE": "0.5", "DRIFTLINE_PIPELINE__SHADOW_CHECK_S": "1"},
    )
    try:
        assert export(TASK, good, name=name, repository=repo, promote=True) == 1
        swapper._client.load_model(name)
        parent = repo / name / "1"
        candidate = _candidate(good, "offline gate passed")
        outcome = updater._start_shadow(
            UpdateOutcome(TASK, "test"), _record(name, candidate), candidate, parent
        )
        assert outcome.version == 2 and outcome.record.status == ModelStatus.SHADOW, outcome.reason
        assert swapper._client.is_model_ready(shadow_name(name), "2")
        assert swapper.serving_versions(name) == [1]

        # 1. a worker mirrors half of the events; feedback arrives through Kafka
        messages, truths = _events(run, "e", N_EVENTS)
        ids = [key.decode() for key, _ in messages]
        run.create_topics(partitions=4)  # as the surge tables' changelogs (settings)
        run.start_worker(tmp_path)
        run.wait_healthy()
        run.produce(run.topics.news, messages)
        expected = sorted(i for i in ids if mirrored(i, 0.5))
        assert 15 < len(expected) < 45

        def shadow_rows() -> dict[str, tuple]:
            rows = db.execute(
                "SELECT event_id, serving_version, shadow_version, shadow_label "
                "FROM shadow_predictions FINAL WHERE model_name = %(m)s",
                {"m": name},
            )
            return {r[0]: r[1:] for r in rows}

        rows = wait_for(lambda: (r := shadow_rows()) and len(r) >= len(expected) and r, timeout=120)
        assert rows and sorted(rows) == expected, (len(rows or {}), len(expected))
        assert {(s, v) for s, v, _ in rows.values()} == {("1", "2")}
        published_versions = {json.loads(v)["model_version"] for v in run.consume_all(run.topics.predictions)}
        assert published_versions == {"1"}, "the shadow's answers are never published"
        labelled = db.execute(
            "SELECT DISTINCT model_version FROM labels FINAL WHERE event_id LIKE %(p)s",
            {"p": f"{run.suffix}-%"},
        )
        assert labelled == [("1",)]

        assert updater.check_shadow().wait  # no feedback yet: 0 labels < 20
        feedback = [
            (i.encode(), json.dumps(_feedback(i, t)).encode()) for i, t in zip(ids, truths, strict=True)
        ]
        run.produce(run.topics.feedback, feedback)
        graded = wait_for(
            lambda: (n := db.execute(
                "SELECT count() FROM feedback FINAL WHERE event_id LIKE %(p)s", {"p": f"{run.suffix}-%"}
            )[0][0]) >= N_EVENTS and n,
            timeout=90,
        )  # fmt: skip
        assert graded

        # 2. enough evidence: promoted
        decision = updater.check_shadow()
        assert decision is not None and decision.promote, decision
        # the same weights: they agree but for near-ties, which the two exports' engines (each chosen by
        # its own speed measurement) may break apart
        assert decision.metrics["shadow_agreement"] >= 0.85 and decision.metrics["shadow_graded"] == N_EVENTS
        assert swapper.serving_versions(name) == [2]
        assert not (repo / shadow_name(name)).exists()
        with contextlib.suppress(Exception):
            assert not swapper._client.is_model_ready(shadow_name(name), "2")
        served = registry.get(name, 2)
        assert served.status == ModelStatus.SERVING
        assert served.metrics["baseline_accuracy"] == 0.6 and served.metrics["shadow_graded"] == N_EVENTS

        # 3. a bad candidate as the next shadow: rejected on agreement, version 2 keeps serving
        bad_candidate = _candidate(bad, "offline gate passed (planted)")
        record = _record(name, bad_candidate).model_copy(update={"metrics": {
            **bad_candidate.decision.metrics, "parent_version": 2}})  # fmt: skip
        outcome = updater._start_shadow(UpdateOutcome(TASK, "test"), record, bad_candidate, repo / name / "2")
        assert outcome.version == 3, outcome.reason
        more, more_truths = _events(run, "f", N_EVENTS)
        run.produce(run.topics.news, more)
        run.produce(
            run.topics.feedback,
            [(k, json.dumps(_feedback(k.decode(), t)).encode())
             for (k, _), t in zip(more, more_truths, strict=True)],
        )  # fmt: skip
        deadline = time.monotonic() + 120
        decision = updater.check_shadow()
        while decision is not None and decision.wait and time.monotonic() < deadline:
            time.sleep(2)
            decision = updater.check_shadow()
        assert decision is not None and decision.verdict.value == "reject", decision
        assert swapper.serving_versions(name) == [2]
        assert registry.get(name, 3).status == ModelStatus.REJECTED
        assert not (repo / shadow_name(name)).exists()
    finally:
        run.stop()
        for model in (shadow_name(name), name):
            with contextlib.suppress(Exception):
                swapper._client.unload_model(model)
        shutil.rmtree(repo / name, ignore_errors=True)
        shutil.rmtree(repo / shadow_name(name), ignore_errors=True)
