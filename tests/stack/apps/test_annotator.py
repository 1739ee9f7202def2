"""The annotator page, clicked through in headless Chromium against a real worker, explainer and dashboard.

A worker (own topics, throwaway ClickHouse database) classifies news events with a 50 % label-request
budget; the explainer explains the requests. The dashboard runs as the real CLI with one annotator
token. In Chromium (DevTools protocol: real mouse and keyboard events) a person types the token,
sees the first request with the explanation's words highlighted, clicks the true label, skips the
next request with ``s`` and answers the one after with its digit key. Then:

- the two answers are on the feedback topic and joined to their predictions in ``feedback``
  (``source`` ``annotator:<id>``, the predicted label and version of their ``labels`` rows);
- their requests become ``answered``; the skipped one stays ``requested``;
- a write without a token, or with a wrong one, is refused (401) and publishes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from driftline.apps.testing.harness import (
    PipelineRun,
    ServedModel,
    free_ports,
    news_messages,
    served_model,
    stop_process,
    wait_for,
)
from driftline.models.datasets import load_dataset
from driftline.settings import REPO_ROOT, get_settings
from tests.conftest import migrated_database
from tests.stack.apps.cdp import Browser

pytestmark = pytest.mark.stack

N_EVENTS = 24
ANNOTATOR, TOKEN = "ann-7", "tok-7f3a9c"


@pytest.fixture(scope="module")
def news_model() -> Iterator[ServedModel]:
    with served_model("news_topic") as model:
        yield model


def _start_dashboard(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_ports(1)[0]
    cmd = [sys.executable, "-m", "driftline.apps.cli", "dashboard", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"

    def up() -> bool:
        try:
            with urllib.request.urlopen(url + "healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            assert proc.poll() is None, log.read_text()[-2000:]
            return False

    assert wait_for(up, timeout=30), log.read_text()[-2000:]
    return proc, url


def _post(url: str, body: dict, token: str | None) -> int:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url + "api/feedback", json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def _annotate(url: str, truth: dict[str, str], profile: Path) -> tuple[list[tuple[str, str]], str, int]:
    """Answer (click), skip (key), answer (key); returns the answers, the skipped id, highlighted words."""
    async with Browser(profile) as page:
        await page.goto(url + "annotate?task=news_topic")
        await page.wait_for("document.getElementById('request').dataset.state === 'ready'")
        await page.type_into("#token", TOKEN)
        answers = []
        first = await page.js("document.getElementById('request').dataset.eventId")
        highlighted = await page.js("document.querySelectorAll('#text mark.word').length")
        shot = await page.send("Page.captureScreenshot", format="png")  # the page as a person sees it
        results = REPO_ROOT / "bench" / "results"  # generated, not in git: absent on a fresh clone
        results.mkdir(parents=True, exist_ok=True)
        (results / "annotator.png").write_bytes(base64.b64decode(shot["data"]))
        await page.click(f'.label-btn[data-label="{truth[first]}"]')
        await page.wait_for("document.body.dataset.answered === '1'")
        answers.append((first, truth[first]))

        skipped = await page.wait_for(
            f"(() => {{ const id = document.getElementById('request').dataset.eventId;"
            f" return id && id !== {json.dumps(first)} ? id : null; }})()"
        )
        await page.key("s")
        third = await page.wait_for(
            f"(() => {{ const id = document.getElementById('request').dataset.eventId;"
            f" return id && id !== {json.dumps(skipped)} ? id : null; }})()"
        )
        labels = await page.js(
            "JSON.stringify([...document.querySelectorAll('.label-btn')].map(b => b.dataset.label))"
        )
        await page.key(str(json.loads(labels).index(truth[third]) + 1))
        await page.wait_for("document.body.dataset.answered === '2'")
        answers.append((third, truth[third]))
        status = await page.js("document.getElementById('status').textContent")
        assert ANNOTATOR in status, status
    return answers, skipped, highlighted


def test_annotator_clicks_through_requests_and_the_answers_join(
    news_model: ServedModel, tmp_path: Path
) -> None:
    settings = get_settings()
    online_file = tmp_path / "online.yaml"
    online_file.write_text(yaml.safe_dump({"defaults": {"label_requests": {"budget_fraction": 0.5}}}))
    with migrated_database(settings, "annotate_") as ch:
        database = ch.execute("SELECT currentDatabase()")[0][0]
        run = PipelineRun(
            routes={"news": f"news_topic@{news_model.name}", "chat": "-"},
            extra_env={
                "DRIFTLINE_CLICKHOUSE__DATABASE": database,
                "DRIFTLINE_ONLINE_FILE": str(online_file),
                "DRIFTLINE_LEARNING__REQUEST_STATUS_S": "1",
            },
        )
        s = run.suffix
        examples = load_dataset("bbc_news").split("test")[:N_EVENTS]
        truth = {f"{s}-e{i}": e.label for i, e in enumerate(examples)}
        dashboard = None
        try:
            run.create_topics(partitions=2)
            run.start_worker(tmp_path)
            run.start_explainer(tmp_path)
            run.wait_healthy()
            texts = [(f"{s}-e{i}", e.text[:1500]) for i, e in enumerate(examples)]
            run.produce(run.topics.news, news_messages(texts))

            def requested() -> list[str]:
                rows = ch.execute("SELECT event_id FROM label_requests FINAL WHERE status = 'requested'")
                return [r[0] for r in rows] if len(rows) >= 3 else []

            asked = wait_for(requested, timeout=180)
            assert asked, "the worker asked for at least three labels"

            def explained() -> bool:  # the explainer wrote the words for every request
                rows = ch.execute(
                    "SELECT count() FROM explanations FINAL "
                    "WHERE error = '' AND length(tokens) > 0 AND event_id IN %(ids)s",
                    {"ids": tuple(asked)},
                )
                return rows[0][0] == len(asked)

            assert wait_for(explained, timeout=240), "every request explained"

            env = {**run.env(), "DRIFTLINE_ANNOTATOR_TOKENS": json.dumps({ANNOTATOR: TOKEN})}
            dashboard, url = _start_dashboard(env, tmp_path / "dashboard.log")
            probe = {"task": "news_topic", "event_id": asked[0], "label": truth[asked[0]]}
            assert _post(url, probe, None) == 401
            assert _post(url, probe, "not-the-token") == 401

            answers, skipped, highlighted = asyncio.run(_annotate(url, truth, tmp_path / "profile"))

            def joined() -> list[tuple]:
                rows = ch.execute(
                    "SELECT f.event_id, f.label, f.source, f.predicted_label, f.model_version, l.label, "
                    "l.model_version FROM feedback AS f FINAL "
                    "INNER JOIN (SELECT event_id, label, model_version FROM labels) AS l USING (event_id)"
                )
                return rows if len(rows) >= len(answers) else []

            feedback = wait_for(joined, timeout=90)

            def statuses() -> dict[str, str]:
                found = dict(ch.execute("SELECT event_id, status FROM label_requests FINAL"))
                done = all(found.get(event_id) == "answered" for event_id, _ in answers)
                return found if done else {}

            status = wait_for(statuses, timeout=60)
        finally:
            if dashboard is not None:
                stop_process(dashboard)
            run.stop()

    assert highlighted >= 1, "the request's explanation words are highlighted"
    assert sorted((r[0], r[1]) for r in feedback) == sorted(answers)  # nothing for the skipped one
    for _, _, source, predicted, version, label, label_version in feedback:
        assert source == f"annotator:{ANNOTATOR}"
        assert (predicted, version) == (label, label_version)  # joined to the stored prediction
    assert status and status[skipped] == "requested"
    assert all(status[event_id] == "answered" for event_id, _ in answers)
