"""The one settings object: nested environment names, the unknown-variable guard, overrides, and
the YAML files (tasks, online learning, routes) loading through it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from driftline.online.config import TaskOnlineConfig, UpdaterConfig, online_config
from driftline.settings import ALLOWED_ENV, PipelineConfig, Settings, check_environment, get_settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No DRIFTLINE_* variables from the caller; the cached settings are rebuilt before and after."""
    import os

    for key in list(os.environ):
        if key.upper().startswith("DRIFTLINE_"):
            monkeypatch.delenv(key)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_nested_names_comma_lists_and_derived_bootstrap(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DRIFTLINE_KAFKA__PORT", "19092")
    clean_env.setenv("DRIFTLINE_PIPELINE__MAX_BATCH", "8")
    clean_env.setenv("DRIFTLINE_PIPELINE__SURGE__WINDOW_S", "5")
    clean_env.setenv("DRIFTLINE_PIPELINE__SURGE__NEGATIVE_LABELS", "negative, angry")
    clean_env.setenv("DRIFTLINE_TRITON__PREFERRED_BATCH", "4,16")
    clean_env.setenv("DRIFTLINE_LEARNING__GRACE_S", "8")
    clean_env.setenv("DRIFTLINE_KAFKA__TOPICS__NEWS", "my.news")
    clean_env.setenv("DRIFTLINE_WEB_HOST", "")  # empty means unset
    s = Settings()
    assert s.kafka.bootstrap == "127.0.0.1:19092"
    assert s.pipeline.max_batch == 8 and s.pipeline.surge.window_s == 5.0
    assert s.pipeline.surge.negative_labels == ["negative", "angry"]
    assert s.triton.preferred_batch == [4, 16]
    assert s.learning.grace_s == 8.0
    assert s.kafka.topics.news == "my.news"
    assert s.web_host == "127.0.0.1"


def test_secrets_stay_out_of_reprs(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DRIFTLINE_CLICKHOUSE__PASSWORD", "hunter2-secret")
    clean_env.setenv("DRIFTLINE_KAFKA__SASL_PASSWORD", "sasl-secret")
    s = Settings()
    assert s.clickhouse.password.get_secret_value() == "hunter2-secret"
    assert "hunter2-secret" not in repr(s) and "sasl-secret" not in repr(s)


def test_unknown_driftline_variable_is_an_error_naming_it(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DRIFTLINE_KAFKA_BOOTSTRAP", "old-style:9092")  # the pre-nesting name
    with pytest.raises(
        ValueError, match=r"DRIFTLINE_KAFKA_BOOTSTRAP \(did you mean DRIFTLINE_KAFKA__BOOTSTRAP\?\)"
    ):
        Settings()
    clean_env.delenv("DRIFTLINE_KAFKA_BOOTSTRAP")
    clean_env.setenv("DRIFTLINE_PIPELNE__MAX_BATCH", "8")
    with pytest.raises(ValueError, match="did you mean DRIFTLINE_PIPELINE__MAX_BATCH"):
        get_settings()


def test_allow_listed_and_alias_variables_pass(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ALLOWED_ENV:
        clean_env.setenv(name, "x")
    clean_env.setenv("DRIFTLINE_CACHE", str(tmp_path))
    assert Settings().cache_dir == tmp_path
    check_environment({"PATH": "/bin", "DRIFTLINE_RUN_DIR": "/tmp"})


def test_overrides_without_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DRIFTLINE_PIPELINE__MAX_BATCH", "8")
    tuned = get_settings().pipeline.model_copy(update={"sink_max_rows": 5})
    assert (tuned.max_batch, tuned.sink_max_rows) == (8, 5)
    assert PipelineConfig(max_batch=1).sink_max_rows == PipelineConfig().sink_max_rows
    assert Settings(web_port=1234).web_port == 1234


def test_online_defaults_are_written_once() -> None:
    """The package's online.yaml states only what differs from the pydantic defaults."""
    assert UpdaterConfig().labels_after_drift == 50  # what production ran with
    assert online_config("news_topic").updater.labels_after_drift == 50
    raw = yaml.safe_load(get_settings().online_file.read_text(encoding="utf-8"))
    defaults = TaskOnlineConfig().model_dump()

    def restated(section: dict, base: dict, path: str = "") -> list[str]:
        found = []
        for key, value in section.items():
            if isinstance(value, dict):
                found += restated(value, base[key], f"{path}{key}.")
            elif base[key] == value:
                found.append(path + key)
        return found

    sections = [raw.get("defaults") or {}, *((raw.get("tasks") or {}).values())]
    assert not [p for section in sections for p in restated(section or {}, defaults)]


def test_yaml_files_come_from_the_settings(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from driftline.models.tasks import load_tasks
    from driftline.streams.routing import load_routes

    tasks = yaml.safe_load(get_settings().tasks_file.read_text(encoding="utf-8"))
    tasks["tasks"] = {"only_news": tasks["tasks"]["news_topic"]}
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump(tasks))
    (tmp_path / "online.yaml").write_text("defaults:\n  updater: {labels_after_drift: 7}\n")
    (tmp_path / "routes.yaml").write_text("routes:\n  - {topic: chat, schema: chat, task: only_news}\n")
    clean_env.setenv("DRIFTLINE_TASKS_FILE", str(tmp_path / "tasks.yaml"))
    clean_env.setenv("DRIFTLINE_ONLINE_FILE", str(tmp_path / "online.yaml"))
    clean_env.setenv("DRIFTLINE_ROUTES_FILE", str(tmp_path / "routes.yaml"))
    get_settings.cache_clear()
    assert set(load_tasks()) == {"only_news"}
    assert online_config("only_news").updater.labels_after_drift == 7
    routes = load_routes(get_settings())
    assert [(r.topic, r.task) for r in routes] == [("driftline.chat.events", "only_news")]


def test_compose_and_scripts_set_only_known_variables() -> None:
    """Every DRIFTLINE_* name docker-compose sets or interpolates is a setting (or allow-listed)."""
    import re

    from driftline.settings import REPO_ROOT

    names: set[str] = set()
    for path in ("compose/docker-compose.yml", "compose/setup.sh", "Makefile", ".ci/run"):
        file = REPO_ROOT / path
        if file.exists():
            names |= set(re.findall(r"DRIFTLINE_[A-Z0-9_]*[A-Z0-9]", file.read_text(encoding="utf-8")))
    assert names, "no DRIFTLINE_ names found"
    check_environment(dict.fromkeys(names, "x"))
