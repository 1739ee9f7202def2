"""``Updater.run_update`` end to end on the real stack: Kafka loop, training, export, hot swap, registry.

One Triton model under a unique name (``UpdaterConfig.model_name``), its own ClickHouse database
(all migrations applied) and its own Kafka topics, so nothing shared is touched. A weak first
version (4 training steps) serves; then, in order:

1. ``run_updater`` consumes a drift alert and feedback from Kafka, refits the head on the
   feedback (the drift response: the adapter is kept), the policy promotes it, and it is exported
   (inheriting the parent's engine choice) and hot-swapped in (version 2 serves, registry: 2 serving /
   1 retired, an ``info`` model alert on the alerts topic);
2. the same drift again, with version 2 serving: it gets too few held-out texts wrong for any
   candidate to show a gain, so the updater waits without training one;
3. a candidate the gate cannot accept (impossible margin, and the holdout already counts as full)
   is rejected: after a drift the head refit is rejected first and a LoRA candidate trains at once,
   and is rejected too: serving untouched, a ``rejected`` registry row, a ``warning`` alert saying
   why;
   with too few held-out labels the gate waits instead: nothing trained, no registry row, an
   ``info`` alert saying how many labels it waits for;
4. training crashes (injected exception): serving untouched, a ``critical`` alert saying why;
5. the exported version cannot be loaded (its weights are corrupted after export): the swap is
   rolled back, version 2 keeps serving and answering, a ``critical`` alert and a ``rejected`` row.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.settings import Settings
from tests.conftest import migrated_database, unique_suffix

pytestmark = [pytest.mark.stack, pytest.mark.slow]

TASK = "news_topic"


@pytest.fixture
def db(settings: Settings) -> Iterator[object]:
    with migrated_database(settings, "updater_") as client:
        yield client


def _weak_artifact() -> Path:
    """A barely trained adapter (cached; shared with test_hot_swap): easy to beat on feedback."""
    from driftline.models.cache import get_or_train
    from driftline.models.tasks import get_task

    return get_or_train(get_task(TASK), limit=16, max_steps=4, progress=False).artifact_dir


def _feedback_examples():
    """Validation-split texts as 'recent feedback' (never in the weak adapter's training data)."""
    from driftline.models.datasets import load_dataset
    from driftline.models.tasks import get_task

    examples = load_dataset(get_task(TASK).dataset).split("validation")
    return examples[:150]


async def _read_topic(bootstrap: str, topic: str, expect: int, timeout_s: float = 30) -> list[dict]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    out: list[dict] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(out) < expect and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            out += [json.loads(m.value) for msgs in batches.values() for m in msgs]
    finally:
        await consumer.stop()
    return out


async def test_run_update_promote_reject_crash(
    settings: Settings, db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiokafka import AIOKafkaProducer

    import driftline.models.training
    import driftline.models.triton.export
    from driftline.models.inference.triton import TritonClient
    from driftline.models.triton.export import export
    from driftline.online.config import UpdaterConfig, online_config
    from driftline.online.serving.registry import ModelRegistry
    from driftline.online.serving.swap import TritonSwapper
    from driftline.online.update.sources import ListSource
    from driftline.online.update.updater import Updater
    from driftline.schema.records import AlertRecord, DriftEvent, ModelStatus
    from driftline.streams.services.update_loop import run_updater

    bootstrap = settings.kafka.bootstrap
    name = unique_suffix("updtest_")
    alerts_topic, feedback_topic = unique_suffix("test.alerts."), unique_suffix("test.feedback.")
    repo = settings.triton.repository
    loop = asyncio.get_running_loop()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()

    published: list[dict] = []

    def publish(alert: dict) -> None:  # called from the update thread, like the CLI's publisher
        published.append(alert)
        payload = AlertRecord(**alert).model_dump_json().encode()  # the alerts-topic contract
        asyncio.run_coroutine_threadsafe(producer.send_and_wait(alerts_topic, payload), loop).result(30)

    config = UpdaterConfig(
        **{
            **online_config(TASK).updater.model_dump(),
            "model_name": name,
            "min_new_labels": 20,
            "labels_after_drift": 0,  # alerts and feedback are separate topics: any read order
            "retrain_every_labels": 10_000,
            "replay_size": 60,
            "epochs": 1,
            "max_steps": 24,
            "max_length": 64,  # cost: the test checks the plumbing, the scenario checks learning
            "cooldown_s": 0,
        }
    )
    registry = ModelRegistry(db)
    source = ListSource()  # filled once the drift below exists: this feedback came after it
    swapper = TritonSwapper(drain_quiet_s=0.5, drain_timeout_s=5, ready_timeout_s=90)
    updater = Updater(
        TASK,
        source=source,
        registry=registry,
        swapper=swapper,
        publish=publish,
        config=config,
        artifacts_dir=tmp_path / "artifacts",
        progress=False,
        original_eval_size=60,
    )
    try:
        weak = await asyncio.to_thread(_weak_artifact)
        assert export(TASK, weak, name=name, repository=repo, promote=True) == 1
        await asyncio.to_thread(swapper._client.load_model, name)

        # 1. drift alert + feedback through Kafka -> the loop runs one update -> promoted and swapped.
        drift = DriftEvent(
            detector="error_rate",
            task=TASK,
            statistic=0.4,
            window=100,
            model_version="1",
            adapter_hash="weak",
            event_count=100,
            signal="error_rate",
        )
        for example in _feedback_examples():
            source.add(example, drift.detected_ts_ms + 1)
        await producer.send_and_wait(alerts_topic, json.dumps(drift.to_alert()).encode())
        await producer.send_and_wait(alerts_topic, b'{"kind": "drift", "task": "news_topic", "evidence": 7}')
        for i in range(25):
            await producer.send_and_wait(
                feedback_topic, json.dumps({"event_id": f"e{i}", "task": TASK, "label": "sport"}).encode()
            )
        outcomes, stop = [], asyncio.Event()

        def collect(outcome) -> None:
            outcomes.append(outcome)
            loop.call_soon_threadsafe(stop.set)

        await asyncio.wait_for(
            run_updater(
                [TASK],
                {TASK: updater},
                bootstrap=bootstrap,
                alerts_topic=alerts_topic,
                feedback_topic=feedback_topic,
                group_id=unique_suffix("updtest-group-"),
                poll_s=0.5,
                stop=stop,
                consumer_options={"auto_offset_reset": "earliest"},
                on_outcome=collect,
            ),
            timeout=600,
        )
        [first] = outcomes
        assert first.promoted and first.version == 2, first.reason
        assert first.trigger.startswith("drift (error_rate")
        subjects = [a["subject"] for a in published]
        assert subjects[0] == f"{name} update started" and subjects[-1] == f"{name} v2 serving", subjects
        assert swapper.serving_versions(name) == [2]
        async with TritonClient(timeout_s=60) as client:
            [prediction] = await client.predict(name, ["The striker scored twice in the cup final."])
        assert prediction.model_version == "2"
        rows = {r.version: r for r in registry.list(name)}
        assert rows[2].status == ModelStatus.SERVING and rows[1].status == ModelStatus.RETIRED
        assert rows[2].metrics["candidate_recent"] >= rows[2].metrics["serving_recent"] + 0.01

        assert rows[2].metrics["p_better"] < 0.05 and rows[2].metrics["n_recent_holdout"] >= 15
        # a drift is answered by a head refit: version 2 runs version 1's adapter weights unchanged,
        # and its export inherited version 1's engine choice instead of measuring again
        from driftline.models.artifacts import read_meta
        from driftline.models.head_refit import encoder_key

        assert rows[2].metrics["fit"] == "head"
        assert rows[2].metrics["temperature"] > 0 and rows[2].metrics["baseline_temperature"] > 0
        assert encoder_key(repo / name / "2") == encoder_key(repo / name / "1")
        v1, v2 = read_meta(repo / name / "1"), read_meta(repo / name / "2")
        assert (v2.engine, v2.engines) == (v1.engine, v1.engines) and v1.engines

        # 2. the same drift's feedback again: version 2 gets too few of its held-out texts wrong for
        # any candidate to win enough of them, so the updater waits without training one.
        v2_wrong = round((1 - rows[2].metrics["candidate_recent"]) * rows[2].metrics["n_recent_holdout"])
        assert v2_wrong < 5, rows[2].metrics
        nothing_to_win = await asyncio.to_thread(updater.run_update, "test: no room", drift.detected_ts_ms)
        assert nothing_to_win.waiting and nothing_to_win.candidate is None, nothing_to_win.reason
        assert f"serving got {v2_wrong} of" in nothing_to_win.reason
        assert len(registry.list(name)) == 2

        # 3. a candidate the gate cannot accept: serving untouched, rejected row, warning alert.
        updater.policy = updater.policy.model_copy(update={"margin": 1.01, "max_holdout": 1})
        # (after a drift: the head refit is rejected, so the adapter trains too, in the same update;
        # serving is taken to be wrong everywhere, so that the check of step 2 lets a candidate train)
        with monkeypatch.context() as patch:
            patch.setattr(updater, "serving_correct", lambda parent, examples: [False] * len(examples))
            rejected = await asyncio.to_thread(
                updater.run_update, "test: impossible margin", drift.detected_ts_ms
            )
        assert not rejected.promoted and not rejected.waiting
        assert rejected.reason.startswith("rejected: "), rejected.reason
        assert rejected.candidate.decision.metrics["fit"] == "lora"
        assert "on a full holdout" in rejected.candidate.decision.metrics["head_refit_rejected"]
        assert swapper.serving_versions(name) == [2]
        assert [r.status for r in registry.list(name) if r.version == 0] == [ModelStatus.REJECTED]
        # ... and with too few held-out labels it waits: nothing trained, nothing registered.
        updater.policy = updater.policy.model_copy(update={"min_holdout": 1000, "max_holdout": 2000})
        waiting = await asyncio.to_thread(updater.run_update, "test: thin evidence")
        assert waiting.waiting and not waiting.promoted and waiting.candidate is None
        assert waiting.more_labels > 1000 and "waiting" in waiting.reason
        assert len(registry.list(name)) == 3
        updater.policy = updater.policy.model_copy(update={"min_holdout": 15})
        # ... and so it does while fewer labels are stored than min_new_labels: the trigger counted
        # them on the topic, the store has them a moment later, and the drift must not be dropped
        stored = len(source.examples)
        updater.config = updater.config.model_copy(update={"min_new_labels": stored + 5})
        unstored = await asyncio.to_thread(
            updater.run_update, "test: labels on their way", drift.detected_ts_ms
        )
        assert unstored.waiting and unstored.more_labels == 5 and unstored.candidate is None
        assert f"only {stored} labelled recent events" in unstored.reason
        updater.config = config

        # 4. training crashes: serving untouched, critical alert with the cause.
        def boom(*args, **kwargs):
            raise RuntimeError("injected training failure")

        with monkeypatch.context() as patch:
            patch.setattr(driftline.models.training, "train_classifier", boom)
            crashed = await asyncio.to_thread(updater.run_update, "test: crash")
        assert not crashed.promoted and "injected training failure" in crashed.reason
        assert swapper.serving_versions(name) == [2]

        # 5. the exported version cannot load in Triton: swap rolled back, version 2 keeps serving.
        import driftline.online.update.updater
        from driftline.online.gates.promotion import Decision, Verdict

        real_export = driftline.models.triton.export.export

        def corrupt_export(*args, **kwargs) -> int:
            version = real_export(*args, **kwargs)
            folder = repo / name / str(version)
            # whatever engine export chose (its ONNX graph, or the torch weights) cannot load now
            for weights in [folder / "head.safetensors", *folder.glob("*.onnx")]:
                weights.write_bytes(b"not a weights file")
            return version

        with monkeypatch.context() as patch:
            patch.setattr(driftline.models.triton.export, "export", corrupt_export)
            # whatever the evidence, this candidate passes the gate: the export is what fails
            patch.setattr(
                driftline.online.update.updater, "decide", lambda *a: Decision(Verdict.PROMOTE, "planted")
            )
            broken = await asyncio.to_thread(updater.run_update, "test: unloadable export")
        assert not broken.promoted and "keeps serving" in broken.reason, broken.reason
        assert swapper.serving_versions(name) == [2]
        async with TritonClient(timeout_s=60) as client:
            [prediction] = await client.predict(name, ["Shares rose after profits beat forecasts."])
        assert prediction.model_version == "2"
        statuses = {r.version: r.status for r in registry.list(name)}
        assert statuses[3] == ModelStatus.REJECTED and statuses[2] == ModelStatus.SERVING

        # Every decision reached the alerts topic, with the why.
        # (2 drift alerts sent above, then per update: "update started" + its outcome, and the three
        # waits that trained nothing)
        alerts = [a for a in await _read_topic(bootstrap, alerts_topic, expect=13) if a["kind"] == "model"]
        started = [a for a in alerts if a["subject"] == f"{name} update started"]
        assert len(started) == 4, alerts
        by_severity = {}
        for alert in alerts:
            if alert not in started:
                by_severity.setdefault(alert["severity"], []).append(alert["message"])
        assert len(by_severity.get("info", [])) == 4, alerts  # the promotion and the three waits
        assert any("held-out labels from after the drift (< 1000)" in m for m in by_severity["info"])
        assert any("a candidate can only win there" in m for m in by_severity["info"])
        assert any("labelled recent events" in m for m in by_severity["info"])
        assert any(rejected.reason.removeprefix("rejected: ") in m for m in by_severity["warning"])
        assert any("injected training failure" in m for m in by_severity["critical"])
        assert any("keeps serving" in m for m in by_severity["critical"])
        assert all(a["task"] == name for a in alerts)
    finally:
        await producer.stop()
        with contextlib.suppress(Exception):
            swapper._client.unload_model(name)
        swapper.close()
        shutil.rmtree(repo / name, ignore_errors=True)
