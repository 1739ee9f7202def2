"""The artifact cache: reuse the artifact trained with the same task config, data and options.

:func:`get_or_train` saves the demo, benchmarks and CI a retrain; :func:`training_data` is the task's data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from driftline.models.artifacts import META_FILE, ArtifactMeta, artifacts_root, new_artifact_dir, read_meta
from driftline.models.datasets import Example, data_hash, exclude_labels, limit_per_class, load_dataset
from driftline.models.tasks import TaskConfig
from driftline.models.training import RECIPE_VERSION, train_classifier


@dataclass
class TrainResult:
    """Where :func:`get_or_train`'s artifact is, its meta, and whether it came from the cache."""

    artifact_dir: Path
    meta: ArtifactMeta
    reused: bool


def training_data(
    task: TaskConfig, *, exclude: Sequence[str] = (), limit: int | None = None, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """(train, test) examples for a task's dataset: train split filtered/limited, full test split.

    A task with an open taxonomy (``new_labels`` propose/accept) may declare fewer labels than its
    dataset has: examples of the others are left out of both splits (the taxonomy may grow by them
    later, from feedback). A closed task must declare every dataset label.
    """
    dataset = load_dataset(task.dataset)
    undeclared = sorted(set(dataset.labels) - set(task.labels))
    if undeclared and task.new_labels == "reject":
        raise ValueError(
            f"dataset {dataset.name!r} has labels {undeclared} not declared by task {task.name!r}"
        )
    bad = sorted(set(exclude) - set(task.labels))
    if bad:
        raise ValueError(f"cannot exclude unknown labels {bad}; task labels: {task.labels}")
    train = limit_per_class(exclude_labels(dataset.split("train"), [*exclude, *undeclared]), limit, seed=seed)
    return train, exclude_labels(dataset.split("test"), undeclared)


def cache_key(task: TaskConfig, train: Sequence[Example], options: dict[str, object]) -> str:
    """16 hex digits over the recipe version, task config, training data hash and ``options``."""
    payload = json.dumps(
        {
            "recipe": RECIPE_VERSION,
            "task": task.model_dump(mode="json"),
            "data": data_hash(train),
            "options": options,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def find_cached(task_name: str, key: str, root: Path | None = None) -> Path | None:
    """Newest complete artifact under ``root`` whose ``train_config.cache_key`` equals ``key``."""
    root = root or artifacts_root(task_name)
    if not root.is_dir():
        return None
    hits = []
    for meta_file in root.glob(f"*/{META_FILE}"):
        try:
            meta = read_meta(meta_file.parent)
        except (OSError, ValueError):
            continue  # unreadable or foreign folder: not a cache hit
        if meta.train_config.get("cache_key") == key and meta.task == task_name:
            hits.append((meta.created_at, meta_file.parent))
    return max(hits)[1] if hits else None


def get_or_train(
    task: TaskConfig,
    *,
    exclude: Sequence[str] = (),
    limit: int | None = None,
    max_length: int | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
    root: Path | None = None,
) -> TrainResult:
    """Reuse the artifact trained with identical task config, data and options, or train one.

    ``limit`` defaults to the task's ``train.limit_per_class``. The key covers the whole task config
    (encoder, labels, LoRA and optimiser settings), the hash of the exact training examples, the
    options below and :data:`RECIPE_VERSION`; ``force`` retrains.
    """
    limit = limit if limit is not None else task.train.limit_per_class
    train, test = training_data(task, exclude=exclude, limit=limit, seed=seed)
    options: dict[str, object] = {
        "exclude_labels": sorted(exclude),
        "limit_per_class": limit,
        "max_length": max_length or task.max_length,
        "epochs": epochs if epochs is not None else task.train.epochs,
        "max_steps": max_steps,
        "batch_size": batch_size or task.train.batch_size,
        "seed": seed,
    }
    key = cache_key(task, train, options)
    if not force:
        hit = find_cached(task.name, key, root)
        if hit is not None:
            return TrainResult(hit, read_meta(hit), reused=True)
    out_dir = new_artifact_dir(task.name, root)
    meta = train_classifier(
        task,
        train,
        test,
        out_dir=out_dir,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        max_length=max_length,
        extra_config={
            "cache_key": key,
            "exclude_labels": options["exclude_labels"],
            "limit_per_class": limit,
        },
    )
    return TrainResult(out_dir, meta, reused=False)
