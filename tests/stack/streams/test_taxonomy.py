"""An open taxonomy in a real worker: a feedback label news_topic does not declare becomes a proposal.

The worker's tasks file puts news_topic in ``propose`` mode (two examples). Feedback names a new
class "science" for three classified events and a declared label for one more. Then:

- all four feedback rows are stored and joined (the "science" ones as wrong predictions), nothing is
  dead-lettered;
- one "class proposed" alert is on the run's alerts topic, with the label and two of the events as
  examples, and ``task_labels`` holds (news_topic, science) as ``proposed`` with those examples;
- ``driftline labels accept news_topic science`` (the real CLI, same environment) makes it
  ``accepted``, keeping the examples, and ``driftline labels list`` shows it in the next label set.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from driftline.apps.testing.harness import (
    PipelineRun,
    ServedModel,
    clickhouse,
    news_messages,
    served_model,
    wait_for,
)
from driftline.models.datasets import load_dataset
from driftline.settings import REPO_ROOT, get_settings

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def news_model() -> Iterator[ServedModel]:
    with served_model("news_topic") as model:
        yield model


def test_undeclared_feedback_label_is_proposed_then_accepted(news_model: ServedModel, tmp_path: Path) -> None:
    tasks = yaml.safe_load(get_settings().tasks_file.read_text(encoding="utf-8"))
    tasks["tasks"]["news_topic"].update({"new_labels": "propose", "new_label_min_examples": 2})
    tasks_file = tmp_path / "tasks.yaml"
    tasks_file.write_text(yaml.safe_dump(tasks), encoding="utf-8")
    run = PipelineRun(
        routes={"news": f"news_topic@{news_model.name}", "chat": "-"},
        extra_env={"DRIFTLINE_TASKS_FILE": str(tasks_file)},
    )
    s = run.suffix
    label = f"science{s}"  # unique per run: task_labels is shared by every run on this database
    examples = load_dataset("bbc_news").split("test")[:4]
    try:
        run.create_topics(partitions=2)
        run.start_worker(tmp_path)
        run.wait_healthy()
        texts = [(f"{s}-e{i}", e.text[:1200]) for i, e in enumerate(examples)]
        run.produce(run.topics.news, news_messages(texts))

        def labelled() -> bool:
            rows = clickhouse().execute(
                "SELECT count() FROM labels WHERE event_id LIKE %(p)s", {"p": f"{s}-e%"}
            )
            return rows[0][0] >= len(examples)

        assert wait_for(labelled, timeout=120)
        answers = [(f"{s}-e{i}", label) for i in range(3)] + [(f"{s}-e3", examples[3].label)]
        feedback = [
            {
                "event_id": event_id,
                "task": "news_topic",
                "label": answer,
                "source": "test",
                "timestamp": time.time(),
            }
            for event_id, answer in answers
        ]
        run.produce(run.topics.feedback, [(f["event_id"].encode(), json.dumps(f).encode()) for f in feedback])

        def stored() -> list[tuple]:
            rows = clickhouse().execute(
                "SELECT event_id, label, correct FROM feedback FINAL WHERE event_id LIKE %(p)s",
                {"p": f"{s}-e%"},
            )
            return rows if len(rows) == len(answers) else []

        rows = wait_for(stored, timeout=60)

        def proposed() -> list[tuple]:
            return clickhouse().execute(
                "SELECT status, source, examples FROM task_labels FINAL "
                "WHERE task = 'news_topic' AND label = %(l)s",
                {"l": label},
            )

        registry = wait_for(proposed, timeout=30)
        alerts = [json.loads(v) for v in run.consume_all(run.topics.alerts)]
        dead = run.consume_all(run.topics.deadletter)
    finally:
        run.stop()

    assert sorted(r[:2] for r in rows) == sorted(answers)
    assert all(correct == 0 for _, answer, correct in rows if answer == label)
    assert dead == []
    proposals = [a for a in alerts if a["kind"] == "class_proposed"]
    assert len(proposals) == 1, alerts
    evidence = proposals[0]["evidence"]
    assert evidence["label"] == label and len(evidence["examples"]) == 2
    assert set(evidence["examples"]) <= {f"{s}-e{i}" for i in range(3)}
    assert f"driftline labels accept news_topic {label}" in proposals[0]["message"]
    assert len(registry) == 1 and registry[0][0] == "proposed" and registry[0][1] == "feedback"
    assert sorted(registry[0][2]) == sorted(evidence["examples"])

    env = {**run.env(), "DRIFTLINE_TASKS_FILE": str(tasks_file)}
    cli = [sys.executable, "-m", "driftline.apps.cli", "labels"]
    done = subprocess.run(
        [*cli, "accept", "news_topic", label], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    after = clickhouse().execute(
        "SELECT status, examples FROM task_labels FINAL WHERE task = 'news_topic' AND label = %(l)s",
        {"l": label},
    )
    assert after == [("accepted", registry[0][2])]
    listed = subprocess.run([*cli, "list", "news_topic"], env={**env, "COLUMNS": "200"}, cwd=REPO_ROOT,
                            capture_output=True, text=True)  # fmt: skip
    assert listed.returncode == 0 and label in listed.stdout.split("label set of the next version:")[1]
    closed = subprocess.run(
        [*cli, "accept", "news_topic", "other"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert closed.returncode == 1 and "closed taxonomy" in closed.stderr  # the default tasks.yaml
