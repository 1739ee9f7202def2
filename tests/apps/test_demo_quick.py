"""``driftline demo --quick`` end to end against the real stack (the README's main job, small).

Runs the real command as a subprocess on topics and a consumer group of its own (so parallel
pipeline tests are not disturbed; the Triton models are the real news_topic / chat_sentiment, which
is what the demo serves). Asserts what the run measured, from the files it wrote: every published
event was labelled, the report and plots exist, the headline numbers are in range and consistent
with the truth file. Whether drift was detected and an update promoted depends on the building
blocks (feedback join, detectors, updater) and is asserted by the report's own numbers only when
they are present, so a missing block shows up in the report's "Missing" section and here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.harness import unique_suffix
from driftline.settings import Topics

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def test_quick_demo_runs_end_to_end(tmp_path: Path) -> None:
    suffix = unique_suffix()
    env = dict(os.environ, DRIFTLINE_PIPELINE__APP_ID=f"test-demo-{suffix}", COLUMNS="120")
    for name in Topics.model_fields:
        env[f"DRIFTLINE_KAFKA__TOPICS__{name.upper()}"] = f"test.demo.{suffix}.{name}"
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "driftline.apps.cli",
        "demo",
        "--quick",
        "--no-dashboard",
    ]
    result = subprocess.run(
        [*cmd, "--run-dir", str(run_dir)], env=env, capture_output=True, text=True, timeout=1500
    )
    output = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.returncode == 0, output

    for name in (
        "report.md",
        "accuracy.png",
        "throughput.png",
        "latency.png",
        "headline.json",
        "events.jsonl",
    ):
        assert (run_dir / name).stat().st_size > 0, name
    assert (run_dir / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    truth = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    headline = json.loads((run_dir / "headline.json").read_text())

    news = [e for e in truth if e["task"] == "news_topic"]
    assert headline["events_published"]["news_topic"] == len(news) > 0
    assert headline["events_labelled"] == headline["events_published"], "not every event was labelled"
    assert {e["phase"] for e in news} >= {"pre", "post", "after"}
    assert all(e["label"] != "entertainment" for e in news if e["phase"] == "pre")
    assert any(e["label"] == "entertainment" for e in news if e["phase"] != "pre")
    assert headline["feedback_sent"] == sum(e["feedback"] for e in truth) > 0
    assert 0.0 <= headline["pre_shift_accuracy"] <= 1.0
    assert headline["latency_ms"]["news_topic"]["p50"] > 0
    # the initial adapter never saw entertainment: it cannot get it right before an update
    assert headline["entertainment_accuracy_before"] in (None, 0.0)
    if headline["promoted_version"]:
        assert headline["recovered_events"] > 0
        assert headline["recovery_ratio"] == pytest.approx(
            headline["recovered_accuracy"] / headline["pre_shift_accuracy"]
        )
    report = (run_dir / "report.md").read_text()
    assert "pre-shift accuracy" in report and "![accuracy](accuracy.png)" in report
    # workers and the updater were stopped: nothing of this run is left behind
    logs = sorted(p.name for p in (run_dir / "logs").iterdir())
    assert "updater.log" in logs and "worker-1.log" in logs
    assert "stopped worker-1" in result.stdout
