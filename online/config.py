"""Online-learning configuration per task: detector parameters, updater schedule, promotion policy.

Defaults are the pydantic field defaults; the online YAML file states only what differs (``defaults``, then
``tasks.<name>``, deep-merged), validated so a misspelt threshold fails at start-up.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from driftline.settings import get_settings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorRateConfig(_Strict):
    """The error-rate detector (ADWIN or DDM over prediction mistakes)."""

    enabled: bool = True
    method: Literal["adwin", "ddm"] = "adwin"
    delta: float = 0.002
    grace_period: int = 30
    warm_start: int = 30
    drift_threshold: float = 3.0


class ConfidenceConfig(_Strict):
    """Page-Hinkley on the served confidence."""

    enabled: bool = True
    min_instances: int = 100
    delta: float = 0.01
    threshold: float = 8.0
    alpha: float = 1.0  # alpha<1 fades the sums into a noisy AR process: false alarms


class LabelMixConfig(_Strict):
    """The predicted-label mix of a recent window against a reference window."""

    enabled: bool = True
    reference_size: int = 300
    window_size: int = 200
    check_every: int = 10
    threshold: float = 0.2


class UnlearnedClassConfig(_Strict):
    """Feedback naming a class the serving version never gets right (``online/drift/unlearned_class.py``)."""

    enabled: bool = True
    min_labels: int = Field(5, ge=1)  # labels of one class, all predicted wrong, that make it unlearned


class DriftConfig(_Strict):
    """The detectors of one task."""

    reset_on_model_change: bool = True  # a new serving version gets fresh baselines
    error_rate: ErrorRateConfig = Field(default_factory=ErrorRateConfig)
    confidence: ConfidenceConfig = Field(default_factory=ConfidenceConfig)
    label_mix: LabelMixConfig = Field(default_factory=LabelMixConfig)
    unlearned_class: UnlearnedClassConfig = Field(default_factory=UnlearnedClassConfig)


class UpdaterConfig(_Strict):
    """When the updater trains, on what, and with which cost knobs."""

    # Triton model (and registry key) the updater serves; None = the task name. Tests and the demo
    # point it at their own model so they never swap the shared ``news_topic``.
    model_name: str | None = None
    retrain_every_labels: int = 500  # train even without drift after this many new feedback labels
    min_new_labels: int = 60  # never train on fewer new labels than this
    labels_after_drift: int = 50  # after a drift, wait for this many labels that came after it
    max_recent_labels: int = 2000  # newest feedback labels used per update
    # Only feedback joined at or after this time (epoch ms) is used; None = all. A run that must not
    # learn from earlier runs' labels in the same database (the demo) sets its start time here.
    feedback_since_ts_ms: int | None = None
    replay_size: int = 400  # original training examples mixed in against forgetting
    # share of the feedback that arrived after the drift kept out of training to judge the candidate on
    holdout_fraction: float = Field(0.3, gt=0, lt=1)
    # the gate said "wait": retry after this many more labels at most (fewer when the projected
    # evidence needs fewer: online.promotion.Paired.more_to_show)
    wait_labels: int = Field(20, ge=1)
    # what a drift-triggered update trains first: "head" refits the classifier head on the frozen
    # encoder's features (models/head_refit.py: seconds) and trains the adapter at once only when the
    # gate rejects that; "lora" always trains adapter + head. Updates without a drift train LoRA.
    drift_fit: Literal["head", "lora"] = "head"
    epochs: int = 2
    max_steps: int | None = 150
    # Optimiser / cost knobs for the incremental run; None = the task's training settings.
    lr: float | None = None
    head_lr: float | None = None
    batch_size: int | None = None
    max_length: int | None = None
    threads: int = 2  # torch threads for the update (the CPU target is 2 cores)
    cooldown_s: float = 30.0  # ignore further drift events this long after an update


class PromotionConfig(_Strict):
    """When a candidate adapter replaces the serving one (``online/gates/promotion.py``)."""

    metric: Literal["accuracy", "macro_f1"] = "accuracy"
    margin: float = 0.01  # candidate must beat serving on recent feedback by this much
    tolerance: float = 0.02  # and may lose at most this much on the original test set
    confidence: float = Field(0.95, gt=0.5, lt=1)  # one-sided paired test on the recent holdout
    min_holdout: int = Field(15, ge=1)  # wait (do not judge) below this many held-out labels
    max_holdout: int = Field(200, ge=1)  # no significant gain on this many labels: reject


class LabelRequestConfig(_Strict):
    """Which predictions ask a person for a label (``online/labels/request_policy.py``)."""

    enabled: bool = True
    budget_fraction: float = Field(0.05, ge=0, le=1)  # share of events requested in steady state
    drift_boost: float = Field(3.0, ge=1)  # budget multiplier while a drift is active
    drift_boost_s: float = Field(1800.0, ge=0)  # how long after a drift event the boost lasts
    random_share: float = Field(0.2, ge=0, le=1)  # part of the budget drawn uniformly at random
    # entropy ranks a class the model was never taught above its own errors better than the margin
    # does (docs/history.md: AUC 0.979 vs 0.960 and 0.967 vs 0.904 on two news adapters)
    uncertainty: Literal["margin", "entropy"] = "entropy"
    label_spread: float = Field(0.15, ge=0)  # score penalty per earlier pick of the same label in a step
    duplicate_bits: int = Field(3, ge=0, le=64)  # SimHash distance at which two texts count as one
    expire_after_s: float = Field(86400.0, gt=0)  # a request nobody answered this long becomes expired


class RollbackConfig(_Strict):
    """The watch after a promotion (``online.watch``): SPRTs on the new version's feedback and confidence."""

    enabled: bool = True
    drop: float = Field(0.1, gt=0, lt=1)  # an accuracy drop this large (vs the baseline) rolls back
    alpha: float = Field(0.01, gt=0, lt=0.5)  # chance of rolling back a version that is not worse
    beta: float = Field(0.05, gt=0, lt=0.5)  # chance of missing a drop of `drop`
    max_labels: int = Field(300, ge=1)  # the watch ends (cleared) after this many labels
    baseline_window: int = Field(200, ge=1)  # hand promotions: the previous version's last labels
    min_baseline: int = Field(20, ge=1)  # and at least this many of them, else no watch
    check_every_s: float = Field(5.0, gt=0)  # how often the updater looks at new feedback
    # the same test without labels, on calibrated confidence (CBPE): a collapse rolls back early
    estimate: bool = True
    estimate_drop: float = Field(0.2, gt=0, lt=1)  # larger than `drop`: calibration is uncertain too
    estimate_max_events: int = Field(2000, ge=1)  # predictions read before the estimate's watch ends
    estimate_window: int = Field(500, ge=1)  # the previous version's last predictions: its baseline


class ShadowConfig(_Strict):
    """The shadow phase between the offline gate and serving (``online.shadow``)."""

    # a candidate that passes the offline gate first mirrors live traffic as <model>__shadow
    # (false: it serves at once, judged only by the gate and the watch after promotion)
    enabled: bool = True
    min_events: int = Field(200, ge=0)  # mirrored events before a decision ... or
    min_time_s: float = Field(120.0, ge=0)  # ... this long in shadow, whichever comes first
    min_labels: int = Field(10, ge=1)  # and at least this many feedback labels from the shadow period
    max_time_s: float = Field(3600.0, gt=0)  # still short of evidence then: rejected
    min_agreement: float = Field(0.5, ge=0, le=1)  # with serving, on the mirrored events
    tolerance: float = Field(0.02, ge=0)  # accuracy on shadow-period feedback may trail serving this much
    confidence: float = Field(0.95, gt=0.5, lt=1)  # "significantly worse" (paired test) rejects
    check_every_s: float = Field(5.0, gt=0)  # how often the updater looks at the shadow's evidence


class TaskOnlineConfig(_Strict):
    """Everything online learning needs for one task."""

    drift: DriftConfig = Field(default_factory=DriftConfig)
    updater: UpdaterConfig = Field(default_factory=UpdaterConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    label_requests: LabelRequestConfig = Field(default_factory=LabelRequestConfig)
    rollback: RollbackConfig = Field(default_factory=RollbackConfig)
    shadow: ShadowConfig = Field(default_factory=ShadowConfig)


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@lru_cache(maxsize=4)
def _load_raw(path: str) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}


def online_file_section(task: str, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """What the online file says about ``task``: its ``defaults`` deep-merged with ``tasks.<task>``."""
    raw = _load_raw(str(path or get_settings().online_file))
    return _deep_merge(raw.get("defaults") or {}, (raw.get("tasks") or {}).get(task) or {})


def online_config(task: str, path: str | os.PathLike[str] | None = None) -> TaskOnlineConfig:
    """Settings for ``task``: the field defaults, then the online file (``Settings.online_file``)."""
    return TaskOnlineConfig.model_validate(online_file_section(task, path))
