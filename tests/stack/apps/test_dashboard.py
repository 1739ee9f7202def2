"""``driftline dashboard`` against the real ClickHouse server, checked through its API and in Chromium.

Sample rows (unique task names) go into a private database on the shared server, migrated from
driftline/schema/migrations, and the dashboard runs as the real CLI subprocess pointed at that database
through the environment, exactly as an operator would configure it. The browser test loads the page
in headless Chromium and reads back what the page's own script drew.
"""

from __future__ import annotations

import html.parser
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.apps.testing.harness import free_ports
from driftline.schema.records import ExplanationRecord, insert_sql
from tests.support.analytics_samples import SampleSet, build_samples, migration_statements

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[3]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


@pytest.fixture(scope="module")
def samples() -> SampleSet:
    return build_samples(f"_dash{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def explained(database: str, samples: SampleSet) -> dict[str, ExplanationRecord]:
    """Explanation rows for the three least confident news events: two explained, one failed, plus
    a row for another model version of the second (the dashboard must show the labelling version's)."""
    from driftline.clients import clickhouse_client

    client = clickhouse_client(database=database)
    try:
        rows = client.execute(
            "SELECT event_id, model_version, label, confidence, event_ts_ms FROM labels FINAL "
            "WHERE task = %(task)s ORDER BY confidence, event_ts_ms DESC LIMIT 3",
            {"task": samples.news_task},
        )
        records: dict[str, ExplanationRecord] = {}
        for i, (event_id, version, label, confidence, event_ts_ms) in enumerate(rows):
            records[event_id] = ExplanationRecord(
                task=samples.news_task, event_id=event_id, model_version=version, model_name="m",
                label=label, confidence=confidence, reason="uncertain", event_ts_ms=event_ts_ms,
                explanation=[] if i == 2 else [(f"why{i}", 0.6), (f"not{i}", -0.2)],
                error="RuntimeError: boom" if i == 2 else "",
            )  # fmt: skip
        other = records[rows[1][0]].model_copy(
            update={"model_version": "99", "explanation": [("stale", 1.0)]}
        )
        client.execute(
            insert_sql(ExplanationRecord.TABLE, ExplanationRecord.COLUMNS),
            [r.to_row() for r in [*records.values(), other]],
        )
    finally:
        client.disconnect()
    return records


@pytest.fixture(scope="module")
def database(samples: SampleSet) -> Iterator[str]:
    from clickhouse_driver import Client

    from driftline.settings import get_settings

    c = get_settings().clickhouse
    kwargs = dict(
        host=c.host, port=c.port, user=c.user, password=c.password.get_secret_value(), connect_timeout=5
    )
    name = f"dashboard_test_{uuid.uuid4().hex[:10]}"
    admin = Client(**kwargs)
    admin.execute(f"CREATE DATABASE {name}")
    client = Client(**kwargs, database=name)
    try:
        for statement in migration_statements():
            client.execute(statement)
        samples.insert_with_driver(client)
        yield name
    finally:
        client.disconnect()
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.disconnect()


@pytest.fixture(scope="module")
def dashboard(
    database: str, explained: dict[str, ExplanationRecord], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_ports(1)[0]
    log = tmp_path_factory.mktemp("dashboard") / "dashboard.log"
    env = {**os.environ, "DRIFTLINE_CLICKHOUSE__DATABASE": database}
    cmd = [
        sys.executable,
        "-m",
        "driftline.apps.cli",
        "dashboard",
        "--port",
        str(port),
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dashboard did not come up:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "password" not in log.read_text().lower()


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# --- API -----------------------------------------------------------------------------------------


def test_tasks_lists_the_sample_tasks(dashboard: str, samples: SampleSet) -> None:
    status, body = get(dashboard + "api/tasks")
    assert status == 200
    assert set(samples.tasks) <= set(body["tasks"])
    assert "1h" in body["ranges"]


def test_labels_per_minute_filtered_by_task(dashboard: str, samples: SampleSet) -> None:
    status, body = get(dashboard + f"api/labels?task={samples.news_task}&range=1h")
    assert status == 200
    assert body["filters"]["task"] == samples.news_task and body["filters"]["step_s"] == 60
    assert body["totals"] == {samples.news_task: samples.news_events}  # the replayed row is not counted
    names = {s["name"] for s in body["series"]}
    assert names == {f"{samples.news_task}:{label}" for label in samples.news_label_counts}
    per_label = {s["name"].split(":")[1]: sum(p[1] for p in s["points"]) for s in body["series"]}
    assert per_label == dict(samples.news_label_counts)  # 1-minute buckets: events/min == events
    minutes = {p[0] for s in body["series"] for p in s["points"]}
    assert all(body["filters"]["start"] <= t < body["filters"]["end"] for t in minutes)


def test_wider_range_uses_wider_buckets(dashboard: str, samples: SampleSet) -> None:
    status, body = get(dashboard + f"api/labels?task={samples.news_task}&range=24h")
    assert status == 200 and body["filters"]["step_s"] > 60
    step_min = body["filters"]["step_s"] / 60
    total = sum(p[1] * step_min for s in body["series"] for p in s["points"])
    assert round(total) == samples.news_events


def test_sentiment_by_channel(dashboard: str, samples: SampleSet) -> None:
    status, body = get(dashboard + f"api/sentiment?task={samples.chat_task}")
    assert status == 200
    got = {c["channel"]: (c["positive"], c["negative"]) for c in body["channels"]}
    assert got == {ch: (n["positive"], n["negative"]) for ch, n in samples.chat_channel_counts.items()}


def test_accuracy_by_version_with_markers(dashboard: str, samples: SampleSet) -> None:
    status, body = get(dashboard + f"api/accuracy?task={samples.news_task}&range=1h")
    assert status == 200
    by_version = {}
    for s in [s for s in body["series"] if not s.get("estimated")]:
        graded = sum(p[2] for p in s["points"])
        correct = sum(p[1] * p[2] for p in s["points"])
        by_version[s["name"].rsplit(" v", 1)[1]] = (graded, correct / graded)
    assert set(by_version) == set(samples.accuracy_by_version)
    for version, accuracy in samples.accuracy_by_version.items():
        assert by_version[version][0] == samples.graded_by_version[version]
        assert by_version[version][1] == pytest.approx(accuracy)
    types = {m["type"] for m in body["markers"]}
    assert {"drift", "model", "serving"} <= types
    serving = [m for m in body["markers"] if m["type"] == "serving" and m["text"] == "v2 serving"]
    assert serving and serving[0]["t"] == samples.promotion_ts


def test_accuracy_estimated_without_labels_per_version(dashboard: str, samples: SampleSet) -> None:
    """Each version's estimate is its events' mean calibrated top probability; with fewer graded events
    than a fit needs (10 per version here) the temperature stays 1, so it is their mean confidence."""
    status, body = get(dashboard + f"api/accuracy?task={samples.news_task}&range=1h")
    assert status == 200
    estimated = {s["name"]: s for s in body["series"] if s.get("estimated")}
    latest: dict[str, dict] = {}  # the replayed event counts once, as FINAL reads it
    for row in samples.rows:
        if row.table == "labels" and row.values["task"] == samples.news_task:
            latest[row.values["event_id"]] = row.values
    for version in ("1", "2"):
        line = estimated[f"{samples.news_task} v{version} estimated"]
        assert line["temperature"] is None
        confidences = [v["confidence"] for v in latest.values() if v["model_version"] == version]
        events = sum(p[2] for p in line["points"])
        assert events == len(confidences) == 20
        assert sum(p[1] * p[2] for p in line["points"]) / events == pytest.approx(
            sum(confidences) / len(confidences), abs=1e-3
        )


def test_shadow_agreement_with_serving(dashboard: str, samples: SampleSet) -> None:
    status, body = get(dashboard + f"api/shadow?task={samples.news_task}&range=1h")
    assert status == 200 and body["unit"] == "agreement"
    [series] = body["series"]
    assert series["name"] == f"{samples.news_task} shadow v2 vs v1"
    mirrored = sum(p[2] for p in series["points"])
    assert mirrored == 8
    assert sum(p[1] * p[2] for p in series["points"]) / mirrored == pytest.approx(samples.shadow_agreement)


def test_the_default_range_is_the_span_of_the_data(dashboard: str, samples: SampleSet) -> None:
    status, body = get(dashboard + f"api/labels?task={samples.news_task}")
    assert status == 200
    last_minute = max(samples.minutes)
    assert body["filters"]["start"] == samples.base_ts and body["filters"]["end"] == last_minute + 60
    assert body["totals"] == {samples.news_task: samples.news_events}
    assert get(dashboard + "api/tasks")[1]["ranges"][0] == "all"


def test_event_drill_down(
    dashboard: str, samples: SampleSet, explained: dict[str, ExplanationRecord]
) -> None:
    event_id, record = next((i, r) for i, r in explained.items() if r.explanation)
    status, body = get(dashboard + f"api/event?task={samples.news_task}&event_id={event_id}")
    assert status == 200
    row = next(r.values for r in reversed(samples.rows)
               if r.table == "labels" and r.values["event_id"] == event_id)  # fmt: skip
    assert body["label"] == row["label"] and body["model_version"] == record.model_version
    assert body["text"] == row["text"] and body["confidence"] == pytest.approx(row["confidence"], abs=1e-4)
    assert body["probabilities"][0][0] == row["label"]  # most probable first
    assert sum(p for _, p in body["probabilities"]) == pytest.approx(1.0, abs=1e-3)
    assert body["words"] == [[w, s] for w, s in record.explanation]  # the labelling version's
    graded = [r.values for r in samples.rows if r.table == "feedback" and r.values["event_id"] == event_id]
    assert [f["label"] for f in body["feedback"]] == [g["label"] for g in graded]
    assert body["rescored"] == []
    assert get(dashboard + f"api/event?task={samples.news_task}&event_id=nope")[0] == 404
    assert get(dashboard + "api/event?task=bad%20task&event_id=x")[0] == 400


def test_latency_percentiles(dashboard: str, samples: SampleSet) -> None:
    status, body = get(dashboard + "api/latency?range=1h")
    assert status == 200
    series = {s["name"]: s["points"] for s in body["series"] if s["name"].split()[0] in samples.tasks}
    assert len(series) == 6  # p50, p90, p99 for each sample task
    p50, p99 = series[f"{samples.news_task} p50"], series[f"{samples.news_task} p99"]
    assert len(p50) == len(samples.minutes & {t for t, _ in p50}) > 0
    assert all(a[1] <= b[1] for a, b in zip(p50, p99, strict=True))


def test_alerts_timeline(dashboard: str, samples: SampleSet) -> None:
    status, body = get(dashboard + f"api/alerts?task={samples.news_task}&range=1h")
    assert status == 200
    kinds = sorted((e["event_type"], e["kind"]) for e in body["events"])
    assert kinds == [("alert", "drift"), ("alert", "model"), ("drift", "drift")]
    times = [e["t"] for e in body["events"]]
    assert times == sorted(times, reverse=True)


def test_least_confident_events_with_their_explanations(
    dashboard: str, samples: SampleSet, explained: dict[str, ExplanationRecord]
) -> None:
    status, body = get(dashboard + f"api/explanations?task={samples.news_task}&range=1h")
    assert status == 200
    events = body["events"]
    assert 0 < len(events) <= 50 and {e["task"] for e in events} == {samples.news_task}
    confidences = [e["confidence"] for e in events]
    assert confidences == sorted(confidences)  # least confident first
    by_id = {e["event_id"]: e for e in events}
    assert set(explained) <= set(by_id)
    for event_id, record in explained.items():
        got = by_id[event_id]
        assert got["words"] == [[w, s] for w, s in record.explanation]  # the labelling version's row
        assert got["reason"] == "uncertain" and got["error"] == record.error
    assert any(e["error"] == "RuntimeError: boom" for e in events)
    rest = [e for e in events if e["event_id"] not in explained]
    assert rest and all(e["words"] == [] and e["reason"] == "" for e in rest)  # LEFT JOIN: not explained
    assert all(e["text"].startswith("sample text for") for e in events)


def test_unknown_task_is_empty_not_an_error(dashboard: str) -> None:
    status, body = get(dashboard + "api/labels?task=no_such_task_here")
    assert status == 200 and body["series"] == [] and body["totals"] == {}


@pytest.mark.parametrize(
    "query",
    [
        "range=2h",
        "task=x%27%20OR%201%3D1%20--",
        "task=" + "a" * 200,
        "from=abc",
        "from=2000&to=1000",
        "range=1h&from=1000",
        "limit=5",
    ],
)
def test_bad_filters_get_400(dashboard: str, query: str) -> None:
    status, body = get(dashboard + f"api/labels?{query}")
    assert status == 400
    assert body["error"]


# --- the page in a browser ------------------------------------------------------------------------


class _Charts(html.parser.HTMLParser):
    """Collects chart containers' data-* attributes and counts drawn SVG elements by class."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, dict[str, str]] = {}
        self.classes: dict[str, int] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and a.get("id", "").startswith("chart-"):
            self.charts[a["id"]] = a
        for cls in (a.get("class") or "").split():
            self.classes[cls] = self.classes.get(cls, 0) + 1


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("headless Chromium is needed for the dashboard page test: apt-get install -y chromium")


def _browser(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_page_renders_every_chart_with_data(dashboard: str, samples: SampleSet, tmp_path: Path) -> None:
    url = dashboard + "?range=1h&refresh=0"
    result = _browser(["--dump-dom", url], tmp_path / "profile")
    assert result.returncode == 0, result.stderr[-2000:]
    page = _Charts()
    page.feed(result.stdout)
    assert set(page.charts) == {
        "chart-labels",
        "chart-accuracy",
        "chart-shadow",
        "chart-sentiment",
        "chart-latency",
        "chart-alerts",
        "chart-explanations",
    }
    for chart_id, attrs in page.charts.items():
        assert attrs.get("data-state") == "ok", f"{chart_id}: {attrs}"
        assert int(attrs["data-points"]) > 0, chart_id
    explained = page.charts["chart-explanations"]
    assert int(explained["data-series"]) == 2  # two explained rows among the least confident events
    assert page.classes.get("word", 0) >= 4 and page.classes.get("explained-event", 0) == int(
        explained["data-points"]
    )
    labels = page.charts["chart-labels"]
    assert int(labels["data-series"]) == len(samples.news_label_counts) + 2  # news labels + pos/neg
    assert page.classes.get("pt", 0) >= int(labels["data-points"])  # every point drawn as a marker
    assert page.classes.get("marker-drift", 0) >= 1 and page.classes.get("marker-serving", 0) >= 1
    assert samples.news_task in result.stdout  # task filter options and legends name the tasks

    shot = tmp_path / "dashboard.png"
    result = _browser(["--window-size=1400,1700", f"--screenshot={shot}", url], tmp_path / "profile")
    assert result.returncode == 0 and shot.stat().st_size > 20_000, result.stderr[-2000:]
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, results / "dashboard.png")


def test_page_opens_an_events_drill_down_from_its_link(
    dashboard: str, samples: SampleSet, explained: dict[str, ExplanationRecord], tmp_path: Path
) -> None:
    event_id = next(i for i, r in explained.items() if r.explanation)
    url = dashboard + f"?task={samples.news_task}&event_id={event_id}&refresh=0"
    result = _browser(["--dump-dom", url], tmp_path / "profile")
    assert result.returncode == 0, result.stderr[-2000:]
    detail = result.stdout[result.stdout.index('id="event-detail"') :]
    assert 'data-state="ok"' in detail[:200], detail[:500]
    assert event_id in detail and "event-text" in detail and "<span>sample</span>" in detail
    assert "event-probs" in detail and (
        "fb-right" in detail or "fb-wrong" in detail or "feedback: none" in detail
    )


def test_page_task_filter_limits_charts(dashboard: str, samples: SampleSet, tmp_path: Path) -> None:
    result = _browser(
        ["--dump-dom", dashboard + f"?task={samples.chat_task}&range=1h&refresh=0"], tmp_path / "p"
    )
    page = _Charts()
    page.feed(result.stdout)
    assert page.charts["chart-labels"]["data-series"] == "2"  # positive / negative only
    # no feedback for the chat task: only its version's accuracy estimated without labels
    assert page.charts["chart-accuracy"]["data-series"] == "1" and "estimated" in result.stdout
    assert page.charts["chart-sentiment"]["data-state"] == "ok"
