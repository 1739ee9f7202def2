"""Online-learning configuration per task: detector parameters, updater schedule, promotion policy.

Read from ``online/online.yaml`` (or ``DRIFTLINE_ONLINE_CONFIG``) and validated with pydantic, so
a misspelt threshold fails at start-up with the field named. Task sections deep-merge over
``defaults`` so a task only states what differs.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_ONLINE_FILE = Path(__file__).with_name("online.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorRateConfig(_Strict):
    enabled: bool = True
    method: Literal["adwin", "ddm"] = "adwin"
    delta: float = 0.002
    grace_period: int = 30
    warm_start: int = 30
    drift_threshold: float = 3.0


class ConfidenceConfig(_Strict):
    enabled: bool = True
    min_instances: int = 100
    delta: float = 0.01
    threshold: float = 8.0
    alpha: float = 1.0


class LabelMixConfig(_Strict):
    enabled: bool = True
    reference_size: int = 300
    window_size: int = 200
    check_every: int = 10
    threshold: float = 0.2


class DriftConfig(_Strict):
    reset_on_model_change: bool = True
    error_rate: ErrorRateConfig = Field(default_factory=ErrorRateConfig)
    confidence: ConfidenceConfig = Field(default_factory=ConfidenceConfig)
    label_mix: LabelMixConfig = Field(default_factory=LabelMixConfig)


class UpdaterConfig(_Strict):
    # Triton model (and registry key) the updater serves; None = the task name. Tests and the demo
    # point it at their own model so they never swap the shared ``news_topic``.
    model_name: str | None = None
    retrain_every_labels: int = 500
    min_new_labels: int = 60
    labels_after_drift: int = 0  # after a drift, wait for this many labels that came after it
    max_recent_labels: int = 2000
    # Only feedback joined at or after this time (epoch ms) is used; None = all. A run that must not
    # learn from earlier runs' labels in the same database (the demo) sets its start time here.
    feedback_since_ts_ms: int | None = None
    replay_size: int = 400
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    epochs: int = 2
    max_steps: int | None = 150
    # Optimiser / cost knobs for the incremental run; None = the task's training settings.
    lr: float | None = None
    head_lr: float | None = None
    batch_size: int | None = None
    max_length: int | None = None
    threads: int = 2
    cooldown_s: float = 30.0


class PromotionConfig(_Strict):
    metric: Literal["accuracy", "macro_f1"] = "accuracy"
    margin: float = 0.01
    tolerance: float = 0.02
    min_holdout: int = 20


class TaskOnlineConfig(_Strict):
    drift: DriftConfig = Field(default_factory=DriftConfig)
    updater: UpdaterConfig = Field(default_factory=UpdaterConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)


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


def online_config(task: str, path: str | os.PathLike[str] | None = None) -> TaskOnlineConfig:
    """Settings for ``task``: defaults deep-merged with the task's section (unknown tasks get defaults)."""
    file = str(path or os.environ.get("DRIFTLINE_ONLINE_CONFIG") or DEFAULT_ONLINE_FILE)
    raw = _load_raw(file)
    merged = _deep_merge(raw.get("defaults") or {}, (raw.get("tasks") or {}).get(task) or {})
    return TaskOnlineConfig.model_validate(merged)
