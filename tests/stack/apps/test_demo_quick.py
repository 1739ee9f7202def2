"""``driftline demo --quick`` end to end against the real stack (the README's main job, small).

Runs the real command as a subprocess on topics and a consumer group of its own (so parallel
pipeline tests are not disturbed; the Triton models are the real news_topic / chat_sentiment, which
is what the demo serves). Asserts what the run measured, from the files it wrote: every published
event was labelled, the report and plots exist, the headline numbers are in range and consistent
with the truth file; the shift is visible, drift was detected, and an update was trained and judged.
The run uses the default labeller (active: the simulated annotator answers label requests). The
update must be promoted (the gate waits for evidence instead of rejecting on thin evidence;
``bench.promotion_bench`` counts promotions over 10 seeds), the new version must serve the rest of
the stream and recover, and the new class must be learned.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from driftline.apps.testing.harness import unique_suffix
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
    # the initial adapter classifies the four classes it knows well, and the unseen class costs it
    assert headline["pre_shift_accuracy"] >= 0.85, headline
    assert headline["drop_events"] > 0 and headline["drop_accuracy"] <= headline["pre_shift_accuracy"] - 0.1
    assert headline["latency_ms"]["news_topic"]["p50"] > 0
    # the initial adapter never saw entertainment: it cannot get it right before an update
    assert headline["new_class_accuracy_before"] in (None, 0.0)
    # the loop ran end to end: joined feedback, a drift detected, an update trained and judged, with
    # its reason
    assert headline["feedback_joined_by_pipeline"] > 0
    assert headline["drift_detections"] >= 1 and headline["detection_delay_events"] is not None, headline
    assert headline["decision"] == "promoted" and headline["decision_reason"], headline
    assert headline["decision_fit"] in ("head", "lora"), headline
    # judged on the serving version's own traffic: the new version took over and recovered
    assert headline["promoted_version"] and headline["promoted_version"] != headline["initial_version"]
    assert headline["recovered_events"] > 0
    assert headline["recovery_ratio"] == pytest.approx(
        headline["recovered_accuracy"] / headline["pre_shift_accuracy"]
    )
    assert headline["recovery_ratio"] >= 0.9 and headline["new_class_accuracy_after"] >= 0.7, headline
    report = (run_dir / "report.md").read_text()
    assert "pre-shift accuracy" in report and "![accuracy](accuracy.png)" in report
    # workers and the updater were stopped: nothing of this run is left behind
    logs = sorted(p.name for p in (run_dir / "logs").iterdir())
    assert "updater.log" in logs and "worker-1.log" in logs
    # the feature cache was filled before the stream (``updater --warm-only``), for both tasks
    warm = (run_dir / "logs" / "warm.log").read_text()
    for task in ("news_topic", "chat_sentiment"):
        assert re.search(rf"{task}: [1-9][0-9]* texts in the feature cache, 0 left", warm), warm
    assert "stopped worker-1" in result.stdout
