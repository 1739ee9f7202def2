"""The demo's options (apps/demo/options.py): the online config and its overrides, label requests for
the active labeler, the shadow phase off unless asked for, and the open-taxonomy tasks file.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from driftline.apps.demo.options import NEWS_TASK, DemoConfig


def test_online_config_turns_label_requests_on_for_the_active_labeler(tmp_path: Path) -> None:
    import yaml

    for labeler, enabled in (("active", True), ("random", False)):
        config = DemoConfig.preset(quick=True, run_dir=tmp_path, labeler=labeler, request_fraction=0.12)
        merged = yaml.safe_load(config.write_online_config().read_text())
        assert merged["defaults"]["label_requests"]["enabled"] is enabled
        assert merged["defaults"]["label_requests"]["budget_fraction"] == 0.12


def test_the_shadow_phase_is_off_in_the_demo_unless_asked_for(tmp_path: Path) -> None:
    """Production runs the shadow phase (ShadowConfig's default); the default demo does not, and
    ``--shadow`` turns it on with the demo-scale evidence of DEMO_SHADOW."""
    from driftline.apps.demo.options import DEMO_SHADOW
    from driftline.online.config import ShadowConfig, online_config

    assert ShadowConfig().enabled
    for shadow in (False, True):
        run_dir = tmp_path / str(shadow)
        run_dir.mkdir()
        config = DemoConfig.preset(quick=True, run_dir=run_dir, shadow=shadow)
        merged = online_config(NEWS_TASK, config.write_online_config()).shadow
        assert merged.enabled is shadow
        assert (merged.min_labels, merged.min_time_s) == (
            DEMO_SHADOW["min_labels"],
            DEMO_SHADOW["min_time_s"],
        )


def test_online_overrides_validate(tmp_path: Path) -> None:
    from driftline.online.config import online_config

    for quick in (False, True):
        run_dir = tmp_path / str(quick)  # online_config caches per path
        run_dir.mkdir()
        config = DemoConfig.preset(quick=quick, run_dir=run_dir)
        path = config.write_online_config()
        merged = online_config(NEWS_TASK, path)
        raw = yaml.safe_load(path.read_text())
        assert merged.updater.max_steps == raw["defaults"]["updater"]["max_steps"]
        assert merged.updater.max_steps == config.online_overrides["defaults"]["updater"]["max_steps"]


def test_open_taxonomy_tasks_file_drops_the_new_class_and_accepts_new_labels(tmp_path) -> None:
    from driftline.apps.demo.options import DemoConfig
    from driftline.models.tasks import load_tasks

    config = DemoConfig.preset(quick=True, run_dir=tmp_path, open_taxonomy=True, new_class="sport")
    tasks = load_tasks(config.write_tasks_file())
    news, package = tasks["news_topic"], load_tasks()["news_topic"]
    assert news.labels == [label for label in package.labels if label != "sport"]
    assert news.new_labels == "accept"
    assert tasks["chat_sentiment"] == load_tasks()["chat_sentiment"]  # nothing else changes
