"""How big a demo run is, and the online-learning settings it runs the pipeline with.

Two presets (default and ``--quick``); every number is copied into the run folder's ``config.json``, and a
scaled-down copy of the online file is written there for the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field

NEWS_TASK = "news_topic"
CHAT_TASK = "chat_sentiment"
NEW_CLASS = "entertainment"  # the class news_topic's first adapter never saw
# the shadow phase scaled to a demo stream (online.config.ShadowConfig: 200 events or 120 s, 10 labels)
DEMO_SHADOW = {"min_events": 30, "min_time_s": 15.0, "min_labels": 8, "check_every_s": 2.0}


class TrainPlan(BaseModel):
    """Options for ``driftline.models.cache.get_or_train`` of one initial adapter (cached by these)."""

    limit_per_class: int | None = None
    max_steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None


class DemoConfig(BaseModel):
    """Every number that shapes one demo run (copied into the run folder's config.json)."""

    quick: bool = False
    run_dir: Path
    seed: int = 0
    # stream shape (news): pre-shift events, then the shifted mix until the updater decided (at least
    # post_min, at most post_max events; the publisher pauses at post_max), then after_events more.
    news_pre: int = 400
    news_post_min: int = 150
    news_post_max: int = 700
    news_after: int = 300
    new_class: str = NEW_CLASS  # the news class the first adapter never sees, arriving at the shift
    new_class_share: float = 0.35
    # open taxonomy: new_class is not even declared; news_topic runs with new_labels: accept, and the
    # class is learned from the annotators' labels (accepted, head grown) - write_tasks_file
    open_taxonomy: bool = False
    chat_per_news: float = 0.5  # chat events published per news event
    # who labels: "active" answers the workers' label requests (online/labels/request_policy.py), "random"
    # labels a random feedback_fraction of all events; either way after feedback_delay_s, as a person
    labeler: Literal["active", "random"] = "active"
    feedback_fraction: float = 0.2
    request_fraction: float = 0.1  # active: the label-request budget (boosted during a drift)
    feedback_delay_s: float = 2.0  # a human labels an event a little after it was classified
    # the shadow phase between the gate and serving (online.shadow, on in production). Off by
    # default here: it adds at least DEMO_SHADOW's evidence to the time from the shift to serving,
    # which the default story keeps at <= 300 events; `driftline demo --shadow` runs it.
    shadow: bool = False
    rate: float = 8.0  # events per second, news + chat
    # waits
    decision_timeout_s: float = 300.0  # longest pause at post_max for the updater's decision
    drain_timeout_s: float = 180.0  # longest wait for the pipeline to label everything published
    # initial adapters
    news_train: TrainPlan = Field(default_factory=lambda: TrainPlan(limit_per_class=150, max_steps=160))
    chat_train: TrainPlan = Field(default_factory=lambda: TrainPlan(limit_per_class=200, max_steps=80))
    # where the initial adapters are cached: None = the task's own artifacts folder (what `driftline
    # export` uses); quick runs keep their small adapters apart so they never become "the latest".
    artifacts_subdir: str | None = None
    # processes
    workers: int = 1
    dashboard: bool = True
    keep_running: bool = False
    # overrides merged over online/online.yaml for this run (see module docstring)
    online_overrides: dict[str, Any] = Field(
        default_factory=lambda: {
            "defaults": {
                "drift": {
                    "label_mix": {"reference_size": 200, "window_size": 120},
                    "confidence": {"min_instances": 80},
                },
                # as in the library scenario (online/scenario.py): 400 replayed originals per update
                # keep the original test set within tolerance (docs/history.md). A drift is answered
                # by a head refit (seconds), which learns a new class from a few dozen labels, so
                # half of the post-drift labels can go to judging it instead of 30 %. A first look
                # after 8 labels costs nothing: until the holdout could show a gain (min_holdout, and
                # enough texts serving got wrong: promotion.no_room) nothing trains, and the updater
                # asks for just the labels it projects; so the evidence, not a count, says when.
                "updater": {
                    "min_new_labels": 60,
                    "labels_after_drift": 8,
                    "holdout_fraction": 0.5,
                    "max_steps": 150,
                    "replay_size": 400,
                    "cooldown_s": 20,
                },
                # the exact paired test still needs p < 0.05; the floor only stops tiny holdouts
                "promotion": {"min_holdout": 8},
            }
        }
    )

    @classmethod
    def preset(cls, *, quick: bool, run_dir: Path, **overrides: Any) -> DemoConfig:
        """The default run, or with ``quick`` the small-slice preset; ``overrides`` win over both."""
        if not quick:
            return cls(run_dir=run_dir, **overrides)
        values: dict[str, Any] = {
            "quick": True,
            "news_pre": 120,
            "news_post_min": 60,
            "news_post_max": 220,
            "news_after": 90,
            "new_class_share": 0.4,
            "chat_per_news": 0.3,
            "feedback_fraction": 0.3,
            "request_fraction": 0.15,
            "feedback_delay_s": 1.0,
            "rate": 10.0,
            "decision_timeout_s": 240.0,
            "drain_timeout_s": 120.0,
            "news_train": TrainPlan(limit_per_class=30, max_steps=40),
            "chat_train": TrainPlan(limit_per_class=30, max_steps=16, batch_size=8),
            "artifacts_subdir": "demo-quick-artifacts",
            "online_overrides": {
                "defaults": {
                    "drift": {
                        "error_rate": {"grace_period": 15},
                        "label_mix": {"reference_size": 60, "window_size": 50, "check_every": 5},
                        "confidence": {"min_instances": 40},
                    },
                    "updater": {
                        "min_new_labels": 30,
                        "labels_after_drift": 8,
                        "max_steps": 30,
                        "replay_size": 60,
                        "cooldown_s": 10,
                        "epochs": 1,
                        "holdout_fraction": 0.5,
                    },
                    "promotion": {"min_holdout": 8},
                }
            },
        }
        values.update(overrides)
        return cls(run_dir=run_dir, **values)

    def write_tasks_file(self) -> Path:
        """The active tasks file with ``new_class`` removed from news_topic and ``new_labels: accept``.

        Written into the run folder; the demo points ``DRIFTLINE_TASKS_FILE`` at it, for itself and
        the processes it starts. The package's own tasks file is never changed.
        """
        from driftline.settings import get_settings

        base_file = get_settings().tasks_file
        raw = yaml.safe_load(base_file.read_text(encoding="utf-8")) or {}
        news = raw["tasks"][NEWS_TASK]
        news["labels"] = [label for label in news["labels"] if label != self.new_class]
        news["new_labels"] = "accept"
        out = self.run_dir / "tasks.yaml"
        out.write_text(
            f"# driftline demo --open-taxonomy: {base_file} without {self.new_class!r} in {NEWS_TASK}\n"
            + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True),
            encoding="utf-8",
        )
        return out

    def write_online_config(self, since_ts_ms: int | None = None) -> Path:
        """Merge the overrides over the active online config; write it into the run folder.

        ``since_ts_ms``: the run's start; the updater then learns from this run's feedback only, not
        from earlier demo runs' labels in the same database (each run tells its own story).
        """
        from driftline.settings import get_settings

        base_file = get_settings().online_file
        base = yaml.safe_load(base_file.read_text(encoding="utf-8")) or {}
        overrides = self.online_overrides
        if since_ts_ms is not None:
            overrides = deep_merge(
                overrides, {"defaults": {"updater": {"feedback_since_ts_ms": since_ts_ms}}}
            )
        # active labelling: the workers' label requests are what the simulated annotator answers
        requests = {"enabled": self.labeler == "active", "budget_fraction": self.request_fraction}
        shadow = {**DEMO_SHADOW, "enabled": self.shadow}
        overrides = deep_merge({"defaults": {"label_requests": requests, "shadow": shadow}}, overrides)
        merged = deep_merge(base, overrides)
        out = self.run_dir / "online.yaml"
        out.write_text(
            f"# driftline demo: {base_file} with the demo's overrides (apps/demo/options.py)\n"
            + yaml.safe_dump(merged, sort_keys=False),
            encoding="utf-8",
        )
        return out


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged into a copy of ``base``, nested dicts merged key by key."""
    merged = dict(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
