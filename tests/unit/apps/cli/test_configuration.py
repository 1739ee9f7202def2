"""``driftline config show``: every value with its source, secrets masked, in a table and as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PASSWORD = "cfg-show-pw-7d2c91"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DRIFTLINE_")}
    env.update(
        {
            "DRIFTLINE_KAFKA__BOOTSTRAP": "broker-a:19092,broker-b:19092",
            "DRIFTLINE_PIPELINE__SURGE__WINDOW_S": "5",
            "DRIFTLINE_CLICKHOUSE__PASSWORD": PASSWORD,
            "COLUMNS": "220",
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "driftline.apps.cli", "config", "show", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    return result


def test_config_show_json_has_values_sources_and_masks_secrets() -> None:
    rows = {row["setting"]: row for row in json.loads(_run("--json").stdout)}
    assert rows["kafka.bootstrap"] == {
        "setting": "kafka.bootstrap",
        "env": "DRIFTLINE_KAFKA__BOOTSTRAP",
        "value": "broker-a:19092,broker-b:19092",
        "source": "environment",
    }
    assert rows["pipeline.surge.window_s"]["value"] == 5.0
    assert rows["pipeline.surge.window_s"]["source"] == "environment"
    assert rows["clickhouse.password"]["value"] == "***"
    assert rows["clickhouse.password"]["source"] == "environment"
    assert rows["kafka.port"]["source"] == "default" and rows["kafka.port"]["value"] == 9092
    # online learning: the file's override vs the model defaults
    threshold = rows["online.chat_sentiment.drift.confidence.threshold"]
    assert threshold["value"] == 10.0 and threshold["source"].startswith("file")
    assert rows["online.news_topic.updater.labels_after_drift"] == {
        "setting": "online.news_topic.updater.labels_after_drift",
        "env": "",
        "value": 50,
        "source": "default",
    }


def test_config_show_table() -> None:
    out = _run().stdout
    line = next(line for line in out.splitlines() if "clickhouse.password" in line)
    assert "DRIFTLINE_CLICKHOUSE__PASSWORD" in line and "***" in line and "environment" in line
    assert any("DRIFTLINE_KAFKA__PORT" in line and "default" in line for line in out.splitlines())
