"""The dashboard's panel SQL on modern ClickHouse (chDB, in-process), as compose deploys it.

test_dashboard.py runs every panel against the local 18.16 server; modern servers are stricter in
places (a joined subquery needs an alias), so each query also runs here on the migrated schema with
the analytics sample rows, and the explanations join is checked for what it returns.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from driftline.apps.dashboard import queries as q
from driftline.schema.records import ExplanationRecord
from tests.support.analytics_samples import Row, SampleSet, build_samples, migrated_chdb


def _literal(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "\\'") + "'"


@pytest.fixture(scope="module")
def chdb_samples() -> Iterator[tuple[Any, SampleSet]]:
    samples = build_samples("_chdb")
    with migrated_chdb("dashboard_sql") as sess:
        for statement in samples.insert_statements():
            sess.query(statement)
        yield sess, samples


def _run(sess: Any, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    for name, value in params.items():
        sql = sql.replace(f"%({name})s", _literal(value))
    return json.loads(str(sess.query(sql, "JSON")) or '{"data": []}')["data"]


@pytest.mark.parametrize("name", [n for n in dir(q) if n.endswith("_SQL")])
def test_every_panel_query_runs_on_modern_clickhouse(name: str, chdb_samples: tuple[Any, SampleSet]) -> None:
    sess, samples = chdb_samples
    f = q.parse_filters({"task": samples.news_task, "range": "1h"}, now=time.time())
    params = q.estimate_params(f, {f"{samples.news_task} v1": 2.0})  # the filters, and one fitted 1/T
    rows = _run(sess, getattr(q, name), params)
    assert name in ("TIMELINE_SQL", "SERVING_SQL", "SENTIMENT_SQL", "ACCURACY_SQL") or rows, name


def test_the_estimate_applies_each_versions_temperature(chdb_samples: tuple[Any, SampleSet]) -> None:
    sess, samples = chdb_samples
    f = q.parse_filters({"task": samples.news_task, "range": "1h"}, now=time.time())
    plain = _run(sess, q.ESTIMATE_SQL, q.estimate_params(f, {}))
    sharper = _run(sess, q.ESTIMATE_SQL, q.estimate_params(f, {f"{samples.news_task} v1": 0.5}))
    by = {(r["t"], r["model_version"]): float(r["estimated"]) for r in plain}
    for r in sharper:
        before = by[(r["t"], r["model_version"])]
        if r["model_version"] == "1":
            assert float(r["estimated"]) > before  # T < 1 sharpens: a higher top probability
        else:
            assert float(r["estimated"]) == pytest.approx(before)


def test_temperatures_are_fitted_per_version_with_enough_graded_events() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for _ in range(200):
        logits = rng.normal(0, 1, 3) * 3  # over-confident (sharpened by 3)
        probs = np.exp(logits) / np.exp(logits).sum()
        true = np.exp(logits / 3) / np.exp(logits / 3).sum()
        rows.append({"task": "t", "model_version": "1", "probabilities": probs.tolist(),
                     "truth_index": int(rng.choice(3, p=true)) + 1})  # fmt: skip
    rows += [{"task": "t", "model_version": "2", "probabilities": [0.5, 0.5], "truth_index": 1}] * 5
    rows += [{"task": "t", "model_version": "3", "probabilities": [0.5, 0.5], "truth_index": 0}] * 30
    fitted = q.temperatures(rows)
    assert set(fitted) == {"t v1"}  # v2: too few graded; v3: a truth the version lacks
    assert fitted["t v1"] == pytest.approx(3.0, rel=0.35)


def test_explanations_join_the_labelling_version(chdb_samples: tuple[Any, SampleSet]) -> None:
    sess, samples = chdb_samples
    f = q.parse_filters({"task": samples.news_task, "range": "1h"}, now=time.time())
    (label,) = _run(
        sess,
        "SELECT event_id, model_version, label, confidence, event_ts_ms FROM labels FINAL "
        "WHERE task = %(task)s ORDER BY confidence, event_id LIMIT 1",
        {"task": samples.news_task},
    )
    record = ExplanationRecord(
        task=samples.news_task, event_id=label["event_id"], model_version=label["model_version"],
        model_name="m", label=label["label"], confidence=label["confidence"], reason="sample",
        event_ts_ms=int(label["event_ts_ms"]), explanation=[("why", 0.5)],
    )  # fmt: skip
    stale = record.model_copy(update={"model_version": "99", "explanation": [("stale", 1.0)]})
    for written in (record, stale):  # only the labelling version's row may show
        sess.query(Row.of(written).sql())
    rows = q.shape_explanations(_run(sess, q.EXPLANATIONS_SQL, f.params()), f)["events"]
    assert rows and [r["confidence"] for r in rows] == sorted(r["confidence"] for r in rows)
    hit = [r for r in rows if r["event_id"] == record.event_id]
    assert len(hit) == 1 and hit[0]["words"] == [["why", 0.5]] and hit[0]["reason"] == "sample"
    assert all(r["words"] == [] and r["reason"] == "" for r in rows if r["event_id"] != record.event_id)
