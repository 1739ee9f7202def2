"""Task declarations: which encoder, data, labels and LoRA settings make up each classifier.

Loaded from the file the settings name (``Settings.tasks_file``, ``DRIFTLINE_TASKS_FILE``; the
package's ``models/tasks.yaml``) and validated with pydantic, so a
typo in the configuration fails at start-up with the field named, not mid-training.
"""

from __future__ import annotations

import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, field_validator

from driftline.settings import get_settings


class LoraSettings(BaseModel):
    """The LoRA adapter of a task."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = Field(default_factory=lambda: ["query", "value"])


class TrainSettings(BaseModel):
    """How a task's initial adapter is trained."""

    epochs: int = 3
    batch_size: int = 16
    lr: float = 5e-4
    head_lr: float = 3e-3
    # Sample at most this many training examples per class (None: all). Large corpora are subsampled
    # so a from-scratch training run fits the few-minutes-on-two-CPU-cores budget.
    limit_per_class: int | None = None
    # Add this share of the training examples once more with character noise (typos, look-alikes,
    # zero-width: models.noise.augment), so the model learns misspellings normalization cannot undo.
    augment_fraction: float = Field(0.0, ge=0.0, le=1.0)


class ExplainPolicy(StrEnum):
    """Which classified events of a task get an explanation (``driftline.models.explain.policy``)."""

    ALL = "all"  # every event (costly: one backward pass per event)
    UNCERTAIN = "uncertain"  # confidence below the threshold, plus the random sample
    SAMPLE = "sample"  # the random sample only
    NONE = "none"  # never (``driftline explain EVENT_ID`` still explains on demand)


class ExplainSettings(BaseModel):
    """A task's explanation policy: computed off the serving path, by the explainer service."""

    policy: ExplainPolicy = ExplainPolicy.UNCERTAIN
    # an event is uncertain below this confidence (the probability of its predicted label)
    confidence_below: float = Field(0.7, ge=0.0, le=1.0)
    # share of all events explained regardless of confidence (a baseline of confident decisions);
    # chosen by a hash of (task, event_id), so a replay picks the same events
    sample_rate: float = Field(0.02, ge=0.0, le=1.0)


class TaskConfig(BaseModel):
    """One declared classification task."""

    name: str
    language: str
    encoder: str
    dataset: str
    labels: list[str]
    max_length: int = 256
    # models.normalize.normalize before tokenizing, in training and serving alike: folds look-alike
    # letters and fullwidth forms, drops zero-width/control characters (cheap evasions of a classifier)
    normalize_input: bool = True
    # how a text longer than max_length is cut for serving (models/text/codec.py): its first tokens,
    # or its first and last ones
    truncation: Literal["head", "head_tail"] = "head"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    explain: ExplainSettings = Field(default_factory=ExplainSettings)
    # a feedback label outside ``labels``: dead-lettered (reject), stored and proposed as a new class
    # for a person to accept (propose), or stored and accepted at once (accept); online/labels/taxonomy.py
    new_labels: Literal["reject", "propose", "accept"] = "reject"
    new_label_min_examples: int = Field(3, ge=1)  # distinct events carrying it before it is proposed

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, labels: list[str]) -> list[str]:
        if len(set(labels)) != len(labels) or len(labels) < 2:
            raise ValueError(f"labels must be at least two distinct names, got {labels}")
        return labels


class UnknownTaskError(KeyError):
    """Raised for a task name that the configuration does not declare."""


def load_tasks(path: str | os.PathLike[str] | None = None) -> dict[str, TaskConfig]:
    """Every declared task, from ``path`` or the settings' tasks file."""
    return _load_tasks_file(str(path or get_settings().tasks_file))


@lru_cache(maxsize=4)
def _load_tasks_file(file: str) -> dict[str, TaskConfig]:
    raw = yaml.safe_load(Path(file).read_text(encoding="utf-8"))["tasks"]
    return {name: TaskConfig(name=name, **spec) for name, spec in raw.items()}


def get_task(name: str) -> TaskConfig:
    """The declared task ``name``; ``UnknownTaskError`` names the declared ones otherwise."""
    tasks = load_tasks()
    if name not in tasks:
        raise UnknownTaskError(f"unknown task {name!r}; declared tasks: {sorted(tasks)}")
    return tasks[name]
