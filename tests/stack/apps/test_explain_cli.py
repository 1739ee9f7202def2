"""``driftline explain EVENT_ID`` as an operator runs it, against the real ClickHouse.

Label rows go into a private migrated database; the CLI runs as a subprocess pointed at it and at a
private model repository holding one version of a small trained model. A stored explanation of the
event's version is returned as stored (not recomputed); one that records an error, or
``--recompute``, makes the CLI compute it from the version's weights, store it (``on_demand``,
replacing the row) and print it. Unknown and ambiguous ids are clear errors.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from driftline.apps.testing.harness import unique_suffix
from driftline.models.artifacts import read_meta
from driftline.schema.records import ExplanationRecord, PredictionRecord, insert_sql
from tests.conftest import migrated_database
from tests.support.serving_support import small_artifact

pytestmark = pytest.mark.stack

TEXT = "The striker scored twice in the cup final"


def _label(event_id: str, model: str, task: str = "news_topic") -> PredictionRecord:
    return PredictionRecord(
        event_id=event_id, task=task, event_kind="news", subject="sport", topic="in", partition=0, offset=1,
        event_ts_ms=1_700_000_000_000, processed_ts_ms=1_700_000_000_500, text=TEXT, source="test",
        channel="", language="en", label="sport", confidence=0.55, label_names=["sport"],
        probabilities=[0.55], explanation=[], model_name=model, model_version="1", adapter_hash="",
        truncated=False, latency_ms=1.0,
    )  # fmt: skip


def _stored(event_id: str, model: str, words: list[tuple[str, float]], error: str = "") -> ExplanationRecord:
    return ExplanationRecord(
        task="news_topic", event_id=event_id, model_version="1", model_name=model, label="sport",
        confidence=0.55, explanation=words, reason="uncertain", event_ts_ms=1_700_000_000_000,
        computed_ts_ms=1_700_000_100_000, error=error,
    )  # fmt: skip


@pytest.fixture(scope="module")
def world(settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    repository = tmp_path_factory.mktemp("repo")
    model = unique_suffix("test_explain_cli_")
    shutil.copytree(small_artifact("news_topic"), repository / model / "1")
    run = unique_suffix("cli")
    ids = {name: f"{run}-{name}" for name in ("fresh", "stored", "errored", "twice")}
    with migrated_database(settings, "explain_cli_") as client:
        labels = [_label(ids[n], model) for n in ("fresh", "stored", "errored", "twice")]
        labels.append(_label(ids["twice"], model, task="chat_sentiment"))
        client.execute(
            insert_sql(PredictionRecord.TABLE, PredictionRecord.COLUMNS), [r.to_row() for r in labels]
        )
        stored = [_stored(ids["stored"], model, [("marker", 0.9), ("word", 0.1)]),
                  _stored(ids["errored"], model, [], error="RuntimeError: earlier failure")]  # fmt: skip
        client.execute(
            insert_sql(ExplanationRecord.TABLE, ExplanationRecord.COLUMNS), [r.to_row() for r in stored]
        )
        database = client.execute("SELECT currentDatabase()")[0][0]
        env = {**os.environ, "DRIFTLINE_CLICKHOUSE__DATABASE": database,
               "DRIFTLINE_TRITON__REPOSITORY": str(repository), "DRIFTLINE_EXPLAINER__TORCH_THREADS": "1",
               "COLUMNS": "200"}  # fmt: skip
        yield {"client": client, "env": env, "ids": ids, "model": model, "repository": repository}


def _cli(world: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftline.apps.cli", "explain", *args],
        env=world["env"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _rows(world: dict[str, Any], event_id: str) -> list[ExplanationRecord]:
    columns = ", ".join(ExplanationRecord.COLUMNS)
    rows = world["client"].execute(
        f"SELECT {columns} FROM explanations FINAL WHERE event_id = %(id)s", {"id": event_id}
    )
    return [ExplanationRecord.from_row(row) for row in rows]


def test_stored_explanation_is_returned_without_recomputing(world: dict[str, Any]) -> None:
    event_id = world["ids"]["stored"]
    result = _cli(world, event_id, "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["source"] == "stored" and body["reason"] == "uncertain"
    assert body["explanation"] == [["marker", 0.9], ["word", 0.1]]
    table = _cli(world, event_id)  # the rich table names the words and the decision
    assert table.returncode == 0, table.stderr
    assert "marker" in table.stdout and "+0.9000" in table.stdout and "stored" in table.stdout


def test_missing_or_failed_explanations_are_computed_and_stored(world: dict[str, Any]) -> None:
    meta_hash = read_meta(world["repository"] / world["model"] / "1").adapter_hash
    for name in ("fresh", "errored"):
        event_id = world["ids"][name]
        result = _cli(world, event_id, "--json")
        assert result.returncode == 0, result.stderr
        body = json.loads(result.stdout)
        assert body["source"] == "computed" and body["reason"] == "on_demand" and body["error"] == ""
        words = [word for word, _ in body["explanation"]]
        assert words and all(word in TEXT for word in words)
        (row,) = _rows(world, event_id)  # stored, replacing the error row
        assert row.reason == "on_demand" and row.error == "" and row.adapter_hash == meta_hash
        assert [w for w, _ in row.explanation] == words


def test_recompute_replaces_a_stored_explanation(world: dict[str, Any]) -> None:
    event_id = world["ids"]["stored"]
    result = _cli(world, event_id, "--task", "news_topic", "--recompute", "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["source"] == "computed" and "marker" not in [w for w, _ in body["explanation"]]
    (row,) = _rows(world, event_id)
    assert row.reason == "on_demand" and [w for w, _ in row.explanation] == [
        w for w, _ in body["explanation"]
    ]


def test_unknown_and_ambiguous_ids_are_clear_errors(world: dict[str, Any]) -> None:
    unknown = _cli(world, "no-such-event-id")
    assert unknown.returncode == 1 and "no labelled event with id 'no-such-event-id'" in unknown.stderr
    twice = world["ids"]["twice"]
    ambiguous = _cli(world, twice)
    assert ambiguous.returncode == 1
    assert "chat_sentiment, news_topic" in ambiguous.stderr and "--task" in ambiguous.stderr
    wrong_task = _cli(world, world["ids"]["fresh"], "--task", "chat_sentiment")
    assert wrong_task.returncode == 1 and "for task 'chat_sentiment'" in wrong_task.stderr
