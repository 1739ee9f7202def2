"""The analyst views (0004_analytics.sql), docs/analytics.md's example queries and Grafana's, on chDB.

Each example runs on chDB (modern ClickHouse, in-process) against a private database holding the
migrations and the sample rows of ``analytics_samples``; results are checked against figures
computed in Python from those rows. tests/stack/driftline/test_analytics.py runs the same checks on
the local 18.16 server.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.analytics_samples import SampleSet, build_samples, migration_statements

DOCS = Path(__file__).resolve().parents[4] / "docs" / "analytics.md"


EXAMPLE_RE = re.compile(r"^### (\d+)\. (.+?)\n+```sql\n(.*?)```", re.S | re.M)


def doc_examples() -> dict[int, tuple[str, str]]:
    return {int(n): (title, sql.strip()) for n, title, sql in EXAMPLE_RE.findall(DOCS.read_text())}


Rows = list[dict]


Check = Callable[[Rows, SampleSet], None]


def _by(rows: Rows, *keys: str) -> dict:
    return {tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]: r for r in rows}


def check_label_mix(rows: Rows, s: SampleSet) -> None:
    assert {r["label"]: int(r["events"]) for r in rows} == dict(s.news_label_counts)
    assert [int(r["events"]) for r in rows] == sorted((int(r["events"]) for r in rows), reverse=True)


def check_sentiment(rows: Rows, s: SampleSet) -> None:
    got = _by(rows, "channel")
    assert set(got) == set(s.chat_channel_counts)
    for channel, counts in s.chat_channel_counts.items():
        expected = (counts["positive"] - counts["negative"]) / sum(counts.values())
        assert int(got[channel]["positive_events"]) == counts["positive"]
        assert float(got[channel]["net_sentiment"]) == pytest.approx(expected)
    nets = [float(r["net_sentiment"]) for r in rows]
    assert nets == sorted(nets, reverse=True)


def check_trends(rows: Rows, s: SampleSet) -> None:
    assert sum(int(r["events"]) for r in rows) == s.news_events
    assert all(r["top_topic"] in s.news_label_counts and 0 < float(r["top_share"]) <= 1 for r in rows)


def check_accuracy(rows: Rows, s: SampleSet) -> None:
    news = {r["model_version"]: r for r in rows if r["task"] == s.news_task}
    assert set(news) == set(s.accuracy_by_version)
    for version, accuracy in s.accuracy_by_version.items():
        assert int(news[version]["graded_events"]) == s.graded_by_version[version]
        assert float(news[version]["accuracy"]) == pytest.approx(accuracy)
    assert float(news["2"]["accuracy"]) > float(news["1"]["accuracy"])


def check_latency(rows: Rows, s: SampleSet) -> None:
    got = _by(rows, "task")
    assert int(got[s.news_task]["processed"]) == s.news_events + s.replayed_rows
    assert int(got[s.chat_task]["processed"]) == s.chat_events
    for r in rows:
        assert 0 < float(r["p50_ms"]) <= float(r["worst_p99_ms"])


def check_timeline(rows: Rows, s: SampleSet) -> None:
    # drift alert + model alert + one drift detection that was never mirrored as an alert
    assert [(r["event_type"], r["kind"]) for r in rows] == [
        ("alert", "drift"),
        ("drift", "drift"),
        ("alert", "model"),
    ]
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)


def check_registry(rows: Rows, s: SampleSet) -> None:
    news = _by([r for r in rows if r["task"] == s.news_task], "version")
    assert {v: r["status"] for v, r in news.items()} == {"1": "promoted", "3": "rejected", "2": "promoted"}
    assert float(news["2"]["accuracy"]) == pytest.approx(0.93)
    assert float(news["3"]["recent_gain"]) < 0 < float(news["2"]["recent_gain"])


def check_least_confident(rows: Rows, s: SampleSet) -> None:
    assert len(rows) == 10
    confidences = [float(r["confidence"]) for r in rows]
    assert confidences == sorted(confidences)
    assert len({(r["task"], r["event_id"]) for r in rows}) == 10  # FINAL: no replayed duplicates


def check_replays(rows: Rows, s: SampleSet) -> None:
    got = _by(rows, "task")
    assert int(got[s.news_task]["replayed_rows"]) == s.replayed_rows
    assert int(got[s.news_task]["distinct_events"]) == s.news_events
    assert int(got[s.chat_task]["replayed_rows"]) == 0


def check_mistakes(rows: Rows, s: SampleSet) -> None:
    (news,) = [r for r in rows if r["task"] == s.news_task]
    graded = sum(s.graded_by_version.values())
    correct = sum(s.accuracy_by_version[v] * n for v, n in s.graded_by_version.items())
    assert news["channel"] == "bbc"
    assert int(news["graded"]) == graded
    assert float(news["error_rate"]) == pytest.approx(1 - correct / graded)


EXPECTED: dict[int, tuple[list[str], Check]] = {
    1: (["label", "events", "mean_confidence"], check_label_mix),
    2: (["channel", "positive_events", "negative_events", "net_sentiment"], check_sentiment),
    3: (["hour", "top_topic", "top_share", "events"], check_trends),
    4: (["task", "model_version", "graded_events", "accuracy"], check_accuracy),
    5: (["task", "processed", "p50_ms", "worst_p99_ms"], check_latency),
    6: (["time", "event_type", "kind", "severity", "subject", "message"], check_timeline),
    7: (
        [
            "task",
            "version",
            "status",
            "created_time",
            "accuracy",
            "baseline_accuracy",
            "recent_gain",
            "reason",
        ],
        check_registry,
    ),
    8: (["task", "event_id", "label", "confidence", "text_start"], check_least_confident),
    9: (["task", "rows_written", "distinct_events", "replayed_rows"], check_replays),
    10: (["task", "channel", "graded", "n_correct", "error_rate"], check_mistakes),
}


class ChdbEngine:
    name = "chdb"

    def __init__(self) -> None:
        from chdb import session

        self.session = session.Session()
        self.session.query("CREATE DATABASE IF NOT EXISTS analytics_test")
        self.session.query("USE analytics_test")

    def execute(self, sql: str) -> None:
        self.session.query(sql)

    def rows(self, sql: str) -> tuple[list[str], Rows]:
        result = json.loads(str(self.session.query(sql, "JSON")))
        names = [m["name"] for m in result["meta"]]
        return names, result["data"]

    def close(self) -> None:
        self.session.close()


class ServerEngine:
    name = "server"

    def __init__(self, settings) -> None:
        from clickhouse_driver import Client

        c = settings.clickhouse
        kwargs = dict(host=c.host, port=c.port, user=c.user, password=c.password.get_secret_value())
        self.database = f"analytics_test_{uuid.uuid4().hex[:10]}"
        self.admin = Client(**kwargs, connect_timeout=5)
        self.admin.execute(f"CREATE DATABASE {self.database}")
        self.client = Client(**kwargs, database=self.database, connect_timeout=5)

    def execute(self, sql: str) -> None:
        self.client.execute(sql)

    def rows(self, sql: str) -> tuple[list[str], Rows]:
        data, columns = self.client.execute(sql, with_column_types=True)
        names = [name for name, _ in columns]
        return names, [dict(zip(names, row, strict=True)) for row in data]

    def close(self) -> None:
        self.client.disconnect()
        self.admin.execute(f"DROP DATABASE IF EXISTS {self.database}")
        self.admin.disconnect()


def _load(engine, samples: SampleSet) -> None:
    for statement in migration_statements():
        engine.execute(statement)
    if isinstance(engine, ServerEngine):
        samples.insert_with_driver(engine.client)
    else:
        for statement in samples.insert_statements():
            engine.execute(statement)


@pytest.fixture(scope="module")
def samples() -> SampleSet:
    return build_samples("")  # the real task names: the docs' examples filter on them


@pytest.fixture(scope="module")
def chdb_engine(samples: SampleSet) -> Iterator[ChdbEngine]:
    engine = ChdbEngine()
    _load(engine, samples)
    yield engine
    engine.close()


def _run_example(engine, number: int, samples: SampleSet) -> None:
    title, sql = doc_examples()[number]
    columns, check = EXPECTED[number]
    names, rows = engine.rows(sql)
    assert names == columns, f"example {number} ({title}) on {engine.name}"
    assert rows, f"example {number} ({title}) returned nothing on {engine.name}"
    check(rows, samples)


GRAFANA_DASHBOARD = DOCS.parents[1] / "compose" / "grafana" / "dashboards" / "driftline.json"


def grafana_queries(task: str = "__all") -> dict[str, str]:
    """Every SQL text of the provisioned Grafana dashboard, with Grafana's macros expanded."""
    board = json.loads(GRAFANA_DASHBOARD.read_text())
    found = {p["title"]: p["targets"][0]["rawSql"] for p in board["panels"]}
    found |= {f"annotation {a['name']}": a["target"]["rawSql"] for a in board["annotations"]["list"]}
    found |= {f"variable {v['name']}": v["query"] for v in board["templating"]["list"]}

    def expand(sql: str) -> str:
        sql = re.sub(r"\$__timeInterval\((\w+)\)", r"toStartOfMinute(\1)", sql)
        sql = re.sub(r"\$__timeFilter\((\w+)\)", r"\1 >= now() - INTERVAL 1 HOUR", sql)
        return sql.replace("${task}", task)

    return {title: expand(sql) for title, sql in found.items()}


def test_docs_have_the_examples_the_tests_check() -> None:
    examples = doc_examples()
    assert len(examples) >= 5
    assert set(examples) == set(EXPECTED), "every docs example needs an expectation here (and vice versa)"


@pytest.mark.parametrize("number", sorted(EXPECTED))
def test_doc_example_on_chdb(chdb_engine: ChdbEngine, samples: SampleSet, number: int) -> None:
    _run_example(chdb_engine, number, samples)


def test_materialized_view_deduplicates_replays_and_backfills(samples: SampleSet) -> None:
    """Rows written before 0004 are backfilled; a replay adds to `processed`, not to `events`."""
    from chdb import session

    from tests.support.analytics_samples import MIGRATIONS_DIR, split_statements

    sess = session.Session()
    try:
        sess.query("CREATE DATABASE IF NOT EXISTS backfill_test")
        sess.query("USE backfill_test")
        files = sorted(MIGRATIONS_DIR.glob("*.sql"))
        analytics = [f for f in files if f.name.startswith("0004")]
        for path in [f for f in files if f not in analytics]:
            for statement in split_statements(path.read_text()):
                sess.query(statement)
        label_rows = [r for r in samples.rows if r.table == "labels"]
        early, late = label_rows[:20], label_rows[20:]
        for row in early:
            sess.query(row.sql())
        for path in analytics:
            for statement in split_statements(path.read_text()):
                sess.query(statement)
        for row in late:
            sess.query(row.sql())
        result = json.loads(
            str(
                sess.query(
                    "SELECT task, toUInt64(sum(events)) AS events, toUInt64(sum(processed)) AS processed "
                    "FROM labels_per_minute GROUP BY task ORDER BY task "
                    "SETTINGS output_format_json_quote_64bit_integers = 0",
                    "JSON",
                )
            )
        )["data"]
    finally:
        sess.close()
    got = {r["task"]: (r["events"], r["processed"]) for r in result}
    assert got[samples.news_task] == (samples.news_events, samples.news_events + samples.replayed_rows)
    assert got[samples.chat_task] == (samples.chat_events, samples.chat_events)


@pytest.mark.parametrize("title", sorted(grafana_queries()))
def test_grafana_queries_on_chdb(chdb_engine: ChdbEngine, title: str) -> None:
    _, rows = chdb_engine.rows(grafana_queries()[title])
    assert rows, f"{title}: no rows on sample data"
    assert "$" not in grafana_queries()[title]
    _, news_rows = chdb_engine.rows(grafana_queries("news_topic")[title])  # the task filter works too
    assert len(news_rows) <= len(rows)
