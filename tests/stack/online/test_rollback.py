"""Rollback on the real stack (Triton, ClickHouse, Kafka): by hand, and automatic after a bad promotion.

One Triton model under a unique name and its own ClickHouse database. Version 1 is the task's
small test classifier; version 2 is the same adapter with its head rows rotated, so it names the
wrong class for almost every text (a planted bad promotion).

1. ``driftline models promote 2`` then ``driftline models rollback`` (the CLI, as an operator runs
   it): version 1 serves again in Triton, the registry says 2 rolled_back and 1 serving.
2. Version 1's live feedback (Triton's answers graded against the true labels) is the baseline.
   Version 2 is promoted again by hand (no decision, so the watch uses that baseline), and its
   feedback arrives: the grades of what version 2 answered through Triton. ``run_updater``'s
   watch must roll it back by itself within 100 labels. Afterwards Triton answers with version 1,
   the registry records why, and a critical alert carries the evidence.
3. Without any label: the gate calibrated version 2 as it calibrated version 1 (the temperature
   fitted on version 1's answers to labelled texts), but the version 2 that Triton serves has its
   head scaled down, so its confidence collapsed (a broken export). Version 1's served predictions
   are the baseline; after version 2's first predictions the watch's estimated-accuracy SPRT rolls
   it back before a single feedback label exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftline.settings import Settings
from tests.conftest import migrated_database, unique_suffix

pytestmark = [pytest.mark.stack]

TASK = "news_topic"


@pytest.fixture
def db(settings: Settings) -> Iterator[object]:
    with migrated_database(settings, "rollback_") as client:
        yield client


def _bad_artifact(good: Path, out: Path) -> Path:
    """``good`` with its head's rows rotated by one class: confidently wrong."""
    import torch
    from safetensors.torch import load_file, save_file

    from driftline.models.artifacts import HEAD_FILE, content_hash, update_meta

    shutil.copytree(good, out)
    head = load_file(out / HEAD_FILE)
    save_file({k: torch.roll(v, shifts=1, dims=0).contiguous() for k, v in head.items()}, out / HEAD_FILE)
    update_meta(out, adapter_hash=content_hash(out))
    return out


def _flat_artifact(good: Path, out: Path, scale: float = 0.02) -> Path:
    """``good`` with its head scaled by ``scale``: nearly uniform probabilities, whatever the text."""
    from safetensors.torch import load_file, save_file

    from driftline.models.artifacts import HEAD_FILE, content_hash, update_meta

    shutil.copytree(good, out)
    head = load_file(out / HEAD_FILE)
    save_file({k: (v * scale).contiguous() for k, v in head.items()}, out / HEAD_FILE)
    update_meta(out, adapter_hash=content_hash(out))
    return out


async def _served(name: str, texts: list[str]) -> list[Any]:
    """Triton's predictions (with probabilities) of ``texts`` by the serving version."""
    from driftline.models.inference.triton import TritonClient

    async with TritonClient(timeout_s=60) as client:
        return await client.predict(name, texts)


def _plant_labels(db: Any, name: str, predictions: list[Any], texts: list[str], start_ms: int) -> None:
    """``labels`` rows for predictions the workers would have written: no feedback, only probabilities."""
    from driftline.schema.records import PredictionRecord, insert_sql

    rows = []
    for i, (prediction, text) in enumerate(zip(predictions, texts, strict=True)):
        names = list(prediction.probabilities)
        rows.append(PredictionRecord(
            event_id=unique_suffix("ev-"), task=TASK, event_kind="news", subject=prediction.label, topic="t",
            partition=0, offset=i, event_ts_ms=start_ms + i, processed_ts_ms=start_ms + i, text=text,
            source="test", channel="", language="en", label=prediction.label,
            confidence=prediction.confidence,
            label_names=names, probabilities=[prediction.probabilities[n] for n in names], explanation=[],
            model_name=name, model_version=prediction.model_version, adapter_hash=prediction.adapter_hash,
            truncated=False, latency_ms=1.0,
        ).to_row())  # fmt: skip
    db.execute(insert_sql(PredictionRecord.TABLE, PredictionRecord.COLUMNS), rows, types_check=False)


async def _classify(name: str, texts: list[str]) -> list[tuple[str, str, str]]:
    """(label, version, adapter hash) of each text, as Triton's serving version answers."""
    from driftline.models.inference.triton import TritonClient

    async with TritonClient(timeout_s=60) as client:
        return [(p.label, p.model_version, p.adapter_hash) for p in await client.predict(name, texts)]


def _plant_feedback(db: Any, examples: list[Any], answers: list[tuple[str, str, str]], start_ms: int) -> None:
    from driftline.schema.records import FeedbackRecord, insert_sql

    rows = [
        FeedbackRecord(task=TASK, event_id=unique_suffix("fb-"), label=e.label, source="test",
                       feedback_ts_ms=start_ms + i, joined_ts_ms=start_ms + i, predicted_label=label,
                       correct=label == e.label, model_version=version, adapter_hash=adapter).to_row()
        for i, (e, (label, version, adapter)) in enumerate(zip(examples, answers, strict=True))
    ]  # fmt: skip
    db.execute(insert_sql(FeedbackRecord.TABLE, FeedbackRecord.COLUMNS), rows, types_check=False)


def _cli(settings: Settings, database: str, *args: str) -> str:
    import os

    env = {**os.environ, "DRIFTLINE_CLICKHOUSE__DATABASE": database}
    done = subprocess.run(
        [sys.executable, "-m", "driftline.apps.cli", "models", *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def test_rollback_by_hand_and_automatically_after_a_bad_promotion(
    settings: Settings, db, tmp_path: Path
) -> None:
    from driftline.apps.testing.harness import pipeline_artifact
    from driftline.kafka_admin import create_missing_topics
    from driftline.models.datasets import load_dataset
    from driftline.models.triton.export import export
    from driftline.online.config import online_config
    from driftline.online.serving.registry import ModelRegistry
    from driftline.online.serving.serve import serve_version
    from driftline.online.serving.swap import TritonSwapper
    from driftline.online.update.sources import ClickHouseSource
    from driftline.online.update.updater import Updater
    from driftline.schema.records import ModelStatus
    from driftline.schema.timestamps import now_ms
    from driftline.streams.services.update_loop import run_updater

    name = unique_suffix("rollback_")
    database = db.connection.database
    repo = settings.triton.repository
    swapper = TritonSwapper(drain_quiet_s=0.5, drain_timeout_s=5, ready_timeout_s=90)
    registry = ModelRegistry(db)
    examples = [e for e in load_dataset("bbc_news").split("validation")][:260]
    baseline_examples, watched_examples = examples[:60], examples[60:]
    try:
        good = await asyncio.to_thread(pipeline_artifact, TASK)
        assert export(TASK, good, name=name, repository=repo, promote=True) == 1
        await asyncio.to_thread(swapper._client.load_model, name)
        bad = _bad_artifact(good, tmp_path / "bad")
        assert (
            export(
                TASK, bad, name=name, repository=repo, promote=False, inherit_engine_from=repo / name / "1"
            )
            == 2
        )

        # 1. by hand, through the CLI
        await asyncio.to_thread(_cli, settings, database, "promote", "2", "--task", name)
        assert swapper.serving_versions(name) == [2]
        out = await asyncio.to_thread(_cli, settings, database, "rollback", "--task", name)
        assert "rolled back to version 1" in out
        assert swapper.serving_versions(name) == [1]
        status = {r.version: r.status for r in registry.list(name)}
        assert status == {1: ModelStatus.SERVING, 2: ModelStatus.ROLLED_BACK}

        # 2. version 1's live feedback, then the bad version promoted again by hand, and its feedback
        answers = await _classify(name, [e.text for e in baseline_examples])
        assert {v for _, v, _ in answers} == {"1"}
        _plant_feedback(db, baseline_examples, answers, now_ms() - 60_000)
        baseline = sum(a[0] == e.label for a, e in zip(answers, baseline_examples, strict=True)) / 60
        await asyncio.to_thread(serve_version, name, 2, swapper, registry, reason="planted bad promotion")
        bad_answers = await _classify(name, [e.text for e in watched_examples])
        assert {v for _, v, _ in bad_answers} == {"2"}
        bad_accuracy = sum(a[0] == e.label for a, e in zip(bad_answers, watched_examples, strict=True)) / 200
        assert bad_accuracy < baseline - 0.3, (bad_accuracy, baseline)
        _plant_feedback(db, watched_examples, bad_answers, now_ms() + 1)

        published: list[dict] = []
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def publish(alert: dict) -> None:
            published.append(alert)
            if alert["subject"].endswith("rolled back"):
                loop.call_soon_threadsafe(stop.set)

        updater = Updater(
            TASK, source=ClickHouseSource(db), registry=registry, swapper=swapper, publish=publish,
            config=online_config(TASK).updater.model_copy(update={"model_name": name}), progress=False,
        )  # fmt: skip
        topics = [unique_suffix("test.alerts."), unique_suffix("test.feedback.")]
        await create_missing_topics(settings, topics, partitions=1)
        await asyncio.wait_for(
            run_updater([TASK], {TASK: updater}, bootstrap=settings.kafka.bootstrap, alerts_topic=topics[0],
                        feedback_topic=topics[1], group_id=unique_suffix("rb-"), poll_s=0.5, stop=stop),
            timeout=180,
        )  # fmt: skip

        alert = next(a for a in published if a["subject"].endswith("rolled back"))
        assert alert["severity"] == "critical" and "significantly below" in alert["message"]
        evidence = alert["evidence"]
        assert evidence["version"] == 2 and evidence["rolled_back_to"] == 1
        assert 0 < evidence["watch_labels"] <= 100, evidence
        assert evidence["baseline_accuracy"] == pytest.approx(baseline, abs=1e-4)
        assert swapper.serving_versions(name) == [1]
        assert {v for _, v, _ in await _classify(name, [e.text for e in examples[:5]])} == {"1"}
        records = {r.version: r for r in registry.list(name)}
        assert records[2].status == ModelStatus.ROLLED_BACK and "live accuracy" in records[2].reason
        assert records[1].status == ModelStatus.SERVING
    finally:
        with contextlib.suppress(Exception):  # cleanup only
            swapper._client.unload_model(name)
        shutil.rmtree(repo / name, ignore_errors=True)


async def test_a_version_whose_confidence_collapsed_is_rolled_back_before_any_label(
    settings: Settings, db, tmp_path: Path
) -> None:
    from driftline.apps.testing.harness import pipeline_artifact
    from driftline.models.datasets import load_dataset
    from driftline.models.triton.export import export
    from driftline.online.config import online_config
    from driftline.online.gates.estimate import fit_temperature
    from driftline.online.serving.registry import ModelRegistry
    from driftline.online.serving.serve import serve_version
    from driftline.online.serving.swap import TritonSwapper
    from driftline.online.update.sources import ClickHouseSource
    from driftline.online.update.updater import Updater
    from driftline.schema.records import ModelStatus
    from driftline.schema.timestamps import now_ms

    name = unique_suffix("estimate_")
    repo = settings.triton.repository
    swapper = TritonSwapper(drain_quiet_s=0.5, drain_timeout_s=5, ready_timeout_s=90)
    registry = ModelRegistry(db)
    examples = [e for e in load_dataset("bbc_news").split("validation")][:100]
    texts = [e.text for e in examples]
    try:
        good = await asyncio.to_thread(pipeline_artifact, TASK)
        assert export(TASK, good, name=name, repository=repo, promote=True) == 1
        await asyncio.to_thread(swapper._client.load_model, name)
        flat = _flat_artifact(good, tmp_path / "flat")
        assert export(
            TASK, flat, name=name, repository=repo, promote=False, inherit_engine_from=repo / name / "1"
        ) == 2  # fmt: skip

        before = await _served(name, texts[:60])
        assert {p.model_version for p in before} == {"1"}
        _plant_labels(db, name, before, texts[:60], now_ms() - 60_000)
        names = list(before[0].probabilities)
        probabilities = np.array([[p.probabilities[n] for n in names] for p in before])
        temperature = fit_temperature(probabilities, [names.index(e.label) for e in examples[:60]])
        gate = registry.ensure(name, 2, repo / name / "2", ModelStatus.PROMOTED, "passed the gate")
        calibrated = {"temperature": temperature, "baseline_temperature": temperature}
        gate = gate.model_copy(update={"metrics": calibrated})
        await asyncio.to_thread(
            serve_version, name, 2, swapper, registry, reason="passed the gate", record=gate
        )
        after = await _served(name, texts[60:])
        assert {p.model_version for p in after} == {"2"}
        confidence = sum(p.confidence for p in after) / len(after)
        assert confidence < 0.5, confidence  # the planted version is unsure of everything
        _plant_labels(db, name, after, texts[60:], now_ms() + 1)
        assert db.execute("SELECT count() FROM feedback")[0][0] == 0, "no label exists"

        published: list[dict] = []
        updater = Updater(
            TASK, source=ClickHouseSource(db), registry=registry, swapper=swapper, publish=published.append,
            config=online_config(TASK).updater.model_copy(update={"model_name": name}), progress=False,
        )  # fmt: skip
        verdict = await asyncio.to_thread(updater.watch_promotion)

        assert verdict is not None and verdict.kind == "estimate" and verdict.decision == "rollback"
        assert verdict.labels <= 40 and verdict.live_accuracy < verdict.baseline - 0.2, verdict
        assert verdict.baseline > 0.5  # version 1, calibrated, is as sure as it is right
        assert swapper.serving_versions(name) == [1]
        records = {r.version: r for r in registry.list(name)}
        assert records[2].status == ModelStatus.ROLLED_BACK and "estimated accuracy" in records[2].reason
        alert = next(a for a in published if a["subject"].endswith("rolled back"))
        assert alert["evidence"]["estimate_decision"] == "rollback"
        assert alert["evidence"]["baseline_estimated_accuracy"] == pytest.approx(verdict.baseline, abs=1e-4)
    finally:
        with contextlib.suppress(Exception):  # cleanup only
            swapper._client.unload_model(name)
        shutil.rmtree(repo / name, ignore_errors=True)
