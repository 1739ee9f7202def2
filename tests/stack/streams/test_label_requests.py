"""Label requests in a real worker: under the budget, durable in Kafka and ClickHouse, joined to labels.

One worker (own topics, app id and Triton model) classifies news events with a label-request budget
of 25 % (a quarter of it random) set through its own online file. Every request must be on the
run's label-requests topic and in ``label_requests`` with status ``requested``, name an event that
has a ``labels`` row from the same model version with the same label, record the sampling
probability of its random picks, and the count must follow the budget. Feedback then answers some
of the requests: the worker's status pass marks exactly those ``answered``, the rest stay requested.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from driftline.apps.testing.harness import PipelineRun, ServedModel, clickhouse, served_model, wait_for
from driftline.models.datasets import load_dataset

pytestmark = pytest.mark.stack

N_EVENTS = 160
BUDGET, RANDOM_SHARE = 0.25, 0.25


@pytest.fixture(scope="module")
def news_model() -> Iterator[ServedModel]:
    with served_model("news_topic") as model:
        yield model


def test_requests_follow_the_budget_and_join_their_predictions(
    news_model: ServedModel, tmp_path: Path
) -> None:
    online_file = tmp_path / "online.yaml"
    online_file.write_text(
        yaml.safe_dump(
            {"defaults": {"label_requests": {"budget_fraction": BUDGET, "random_share": RANDOM_SHARE}}}
        ),
        encoding="utf-8",
    )
    run = PipelineRun(
        routes={"news": f"news_topic@{news_model.name}", "chat": "-"},
        extra_env={"DRIFTLINE_ONLINE_FILE": str(online_file), "DRIFTLINE_LEARNING__REQUEST_STATUS_S": "1"},
    )
    s = run.suffix
    texts = [e.text[:1500] for e in load_dataset("bbc_news").split("test")][:N_EVENTS]
    events = []
    for i, text in enumerate(texts):
        title, _, body = text.partition(". ")
        events.append(
            {"id": f"{s}-e{i}", "timestamp": time.time(), "source": "test", "title": title, "body": body}
        )
    try:
        run.create_topics(partitions=4)
        run.start_worker(tmp_path)
        run.wait_healthy()
        run.produce(run.topics.news, [(e["id"].encode(), json.dumps(e).encode()) for e in events])

        def labelled() -> dict[str, tuple]:
            rows = clickhouse().execute(
                "SELECT event_id, label, model_version FROM labels WHERE event_id LIKE %(p)s",
                {"p": f"{s}-e%"},
            )
            return {r[0]: r[1:] for r in rows} if len(rows) == N_EVENTS else {}

        labels = wait_for(labelled, timeout=180)
        assert labels, "every event labelled"

        def requested() -> list[tuple]:
            time.sleep(2)  # the request sink flushes within sink_max_age_s of the labels
            return clickhouse().execute(
                "SELECT event_id, label, model_version, reason, sampling_probability, status, uncertainty "
                "FROM label_requests FINAL WHERE task = 'news_topic' AND event_id LIKE %(p)s",
                {"p": f"{s}-e%"},
            )

        rows = wait_for(requested, timeout=60)
        on_topic = [json.loads(v) for v in run.consume_all(run.topics.label_requests)]

        # a person answers every other request (the true label, whatever the model said)
        answered = sorted(r[0] for r in rows)[::2]
        truth = {
            f"{s}-e{i}": e.label for i, e in enumerate(load_dataset("bbc_news").split("test")[:N_EVENTS])
        }
        feedback = [
            {"event_id": event_id, "task": "news_topic", "label": truth[event_id], "source": "annotator:test",
             "timestamp": time.time()}
            for event_id in answered
        ]  # fmt: skip
        run.produce(run.topics.feedback, [(f["event_id"].encode(), json.dumps(f).encode()) for f in feedback])

        def statuses() -> dict[str, str]:
            found = dict(
                clickhouse().execute(
                    "SELECT event_id, status FROM label_requests FINAL "
                    "WHERE task = 'news_topic' AND event_id LIKE %(p)s",
                    {"p": f"{s}-e%"},
                )
            )
            return found if sum(v == "answered" for v in found.values()) >= len(answered) else {}

        after = wait_for(statuses, timeout=90)
    finally:
        run.stop()

    assert 0.15 * N_EVENTS <= len(rows) <= 0.35 * N_EVENTS, len(rows)
    assert {r[0] for r in rows} == {m["event_id"] for m in on_topic}
    for event_id, label, version, reason, probability, status, score in rows:
        assert labels[event_id] == (label, version)  # the request shows the prediction that was stored
        assert status == "requested"
        assert reason in ("random", "uncertain")
        assert probability == pytest.approx(BUDGET * RANDOM_SHARE if reason == "random" else 0.0)
        assert 0.0 <= score <= 1.0
    assert any(r[3] == "uncertain" for r in rows)
    assert after, "the answered requests were marked answered"
    assert {k for k, v in after.items() if v == "answered"} == set(answered)
    assert {v for k, v in after.items() if k not in answered} == {"requested"}
