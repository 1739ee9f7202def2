"""The learning loop in real workers: feedback join, dead letters, drift alert, restart-safe monitors.

One worker (own topics, app id and Triton model name) classifies news events; the test then sends
feedback for them and checks, through ClickHouse and the run's own Kafka topics:

- joined ``feedback`` rows with the right ``correct`` flag, including feedback joined through the
  ClickHouse ``labels`` fallback (rows planted as if another worker had classified them) and
  feedback that arrived *before* its label row (the grace period);
- malformed feedback and an unknown event id in the dead-letter topic with their reasons;
- a planted error shift raises an ``error_rate`` drift event on the alerts topic and in ClickHouse
  ``drift_events`` and ``alerts`` - *after a worker restart*: the correct feedback is sent to the
  first worker and the wrong feedback to its replacement, and ADWIN only sees a change if the
  replacement resumed the checkpointed window (over errors alone there is nothing to detect).
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from driftline.apps.testing.harness import PipelineRun, ServedModel, clickhouse, served_model, wait_for
from driftline.models.datasets import load_dataset
from driftline.schema.records import PredictionRecord, insert_sql

pytestmark = [pytest.mark.stack, pytest.mark.slow]

N_CORRECT, N_WRONG = 48, 70  # ADWIN checks every 32 observations: 48 zeros then 70 ones cross a check


@pytest.fixture(scope="module")
def news_model() -> Iterator[ServedModel]:
    with served_model("news_topic") as model:
        yield model


def _news(event_id: str, text: str) -> dict[str, Any]:
    title, _, body = text.partition(". ")
    return {"id": event_id, "timestamp": time.time(), "source": "test", "title": title, "body": body}


def _feedback(event_id: str, label: str) -> dict[str, Any]:
    return {"event_id": event_id, "task": "news_topic", "label": label, "source": "test",
            "timestamp": time.time()}  # fmt: skip


def _plant_label(event_id: str, label: str, model: ServedModel) -> None:
    """A labels row written as if another worker (serving the same model) had classified ``event_id``."""
    now = int(time.time() * 1000)
    record = PredictionRecord(
        event_id=event_id, task="news_topic", event_kind="news", subject=label, topic="elsewhere",
        partition=0, offset=0, event_ts_ms=now, processed_ts_ms=now, text="planted", source="test",
        channel="test", language="en", label=label, confidence=0.25, label_names=[label], probabilities=[1.0],
        explanation=[], model_name=model.name, model_version=model.version,
        adapter_hash=model.adapter_hash, truncated=False,
        latency_ms=1.0,
    )  # fmt: skip
    clickhouse().execute(insert_sql(PredictionRecord.TABLE, PredictionRecord.COLUMNS), [record.to_row()],
                         types_check=False)  # fmt: skip


def _feedback_rows(prefix: str) -> dict[str, tuple]:
    rows = clickhouse().execute(
        "SELECT event_id, label, predicted_label, correct, model_version FROM feedback FINAL "
        "WHERE task = 'news_topic' AND event_id LIKE %(p)s",
        {"p": f"{prefix}%"},
    )
    return {r[0]: r[1:] for r in rows}


def _learning_status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/learning", timeout=5) as response:
        return json.loads(response.read())


def _encode(docs: list[dict[str, Any]], key: str) -> list[tuple[bytes, bytes]]:
    return [(d[key].encode(), json.dumps(d).encode()) for d in docs]


def test_feedback_is_joined_dead_lettered_and_drift_survives_a_restart(
    news_model: ServedModel, tmp_path_factory: pytest.TempPathFactory
) -> None:
    run = PipelineRun(
        routes={"news": f"news_topic@{news_model.name}", "chat": "-"},
        extra_env={"DRIFTLINE_LEARNING__GRACE_S": "8", "DRIFTLINE_LEARNING__RETRY_S": "0.5"},
    )
    s = run.suffix
    logs = tmp_path_factory.mktemp("learning")
    labels = sorted({e.label for e in load_dataset("bbc_news").split("test")})
    texts = [e.text[:1500] for e in load_dataset("bbc_news").split("test")[: N_CORRECT + N_WRONG]]
    events = [_news(f"{s}-e{i}", t) for i, t in enumerate(texts)]
    ids = [e["id"] for e in events]
    try:
        run.create_topics(partitions=4)
        port = run.start_worker(logs)
        run.wait_healthy()
        run.produce(run.topics.news, _encode(events, "id"))

        def predicted() -> dict[str, str]:
            rows = clickhouse().execute(
                "SELECT event_id, label FROM labels WHERE task = 'news_topic' AND event_id LIKE %(p)s",
                {"p": f"{s}-e%"},
            )
            return dict(rows) if len(dict(rows)) == len(ids) else {}

        served = wait_for(predicted, timeout=120)
        assert served, "every event labelled"

        # phase 1 (first worker): correct feedback, two events only ClickHouse knows, one label row
        # that lands after its feedback, an unknown id and a malformed message
        _plant_label(f"{s}-x0", "sport", news_model)
        _plant_label(f"{s}-x1", "sport", news_model)
        phase1 = [_feedback(i, served[i]) for i in ids[:N_CORRECT]]
        phase1 += [
            _feedback(f"{s}-x0", "sport"),
            _feedback(f"{s}-x1", "tech"),
            _feedback(f"{s}-late", "tech"),
        ]
        sent_ok = run.produce(run.topics.feedback, _encode(phase1, "event_id"))
        sent_bad = run.produce(
            run.topics.feedback,
            [
                (None, b'{"event_id": "oops", "task": '),
                (None, json.dumps(_feedback(f"{s}-nope", "sport")).encode()),
            ],
        )
        time.sleep(2)
        _plant_label(
            f"{s}-late", "tech", news_model
        )  # the prediction shows up after its feedback, within grace

        expected1 = {**{i: (served[i], served[i], 1) for i in ids[:N_CORRECT]},
                     f"{s}-x0": ("sport", "sport", 1), f"{s}-x1": ("tech", "sport", 0),
                     f"{s}-late": ("tech", "tech", 1)}  # fmt: skip
        rows = wait_for(lambda: (r := _feedback_rows(f"{s}-")) and len(r) >= len(expected1) and r, timeout=60)
        assert rows and {k: v[:3] for k, v in rows.items()} == expected1
        confidences = dict(
            clickhouse().execute(
                "SELECT event_id, confidence FROM feedback FINAL WHERE event_id IN %(ids)s",
                {"ids": (f"{s}-x0", f"{s}-x1", f"{s}-late")},
            )
        )
        assert all(abs(c - 0.25) < 1e-6 for c in confidences.values()), "fallback rows come from ClickHouse"

        where = {(m.topic, m.partition, m.offset): code
                 for m, code in zip(sent_bad, ("not_json", "unknown_event_id"), strict=True)}  # fmt: skip

        def letters() -> dict:
            found = {}
            for value in run.consume_all(run.topics.deadletter, idle_s=1.5):
                d = json.loads(value)
                found[(d["topic"], d["partition"], d["offset"])] = d
            return found if set(where) <= set(found) else {}

        found = wait_for(letters, timeout=40)
        assert found, "malformed and unknown feedback reach the dead-letter topic"
        for position, code in where.items():
            assert found[position]["code"] == code and found[position]["reason"].startswith(code)
        assert not {(m.topic, m.partition, m.offset) for m in sent_ok} & set(found), "good feedback joined"
        status = _learning_status(port)
        assert status["feedback"]["joined_clickhouse"] >= 3 and status["feedback"]["unknown"] == 1
        watched = status["drift"]["tasks"]["news_topic"]
        assert watched["feedback_seen"] == len(expected1) and watched["predictions_seen"] == len(ids)
        alerts_before = [json.loads(v) for v in run.consume_all(run.topics.alerts, idle_s=1.0)]
        assert not [a for a in alerts_before if a["kind"] == "drift" and a["subject"] == "error_rate"]

        # restart: graceful stop, a new worker in the same consumer group takes over
        proc = run.workers.pop()[0]
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) is not None
        port = run.start_worker(logs)
        run.wait_healthy()

        # phase 2 (replacement worker): wrong feedback only; joins through ClickHouse (empty memory)
        wrong = {i: next(label for label in labels if label != served[i]) for i in ids[N_CORRECT:]}
        sent2 = run.produce(
            run.topics.feedback, _encode([_feedback(i, w) for i, w in wrong.items()], "event_id")
        )
        where2 = {i: f"{m.partition}@{m.offset}" for i, m in zip(wrong, sent2, strict=True)}

        def drift_alerts() -> list[dict]:
            values = [json.loads(v) for v in run.consume_all(run.topics.alerts, idle_s=1.0)]
            return [a for a in values if a["kind"] == "drift" and a["subject"] == "error_rate"]

        alerts = wait_for(drift_alerts, timeout=60)
        assert alerts, f"error shift raised no drift alert: {_learning_status(port)}"
        alert = alerts[0]
        assert alert["task"] == "news_topic" and alert["severity"] == "critical"
        assert alert["evidence"]["event_count"] > len(expected1), (
            "the detector resumed its pre-restart window"
        )
        watched = _learning_status(port)["drift"]["tasks"]["news_topic"]
        assert watched["restored"] and watched["predictions_seen"] == len(ids)
        rows = wait_for(lambda: (r := _feedback_rows(f"{s}-e")) and len(r) == len(ids) and r, timeout=90)
        rows = rows or _feedback_rows(f"{s}-e")
        want = {i: (w, served[i], 0) for i, w in wrong.items()}
        off = {(i, where2[i]): rows.get(i) for i, row in want.items() if (rows.get(i) or ())[:3] != row}
        assert len(rows) == len(ids) and not off, (
            f"{len(rows)} of {len(ids)} rows; not as expected: {off}; "
            f"worker's feedback counters: {_learning_status(port)['feedback']}"
        )

        drift_id = alert["alert_id"]
        ch = clickhouse()
        stored = wait_for(
            lambda: ch.execute(
                "SELECT detector, task, statistic, event_count FROM drift_events WHERE drift_id = %(d)s",
                {"d": drift_id},
            ),
            timeout=20,
        )
        assert stored and stored[0][:2] == ("error_rate", "news_topic") and stored[0][2] > 0.2
        assert wait_for(
            lambda: ch.execute("SELECT kind FROM alerts FINAL WHERE alert_id = %(d)s", {"d": drift_id}),
            timeout=20,
        ) == [("drift",)]
    finally:
        run.stop()  # planted labels rows stay: unique ids, like every test row
