"""The examples an update trains and is judged on: one per text id, split stably by id."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from driftline.models.datasets import Example


def dedupe_latest(examples: Sequence[Example]) -> list[Example]:
    """One example per text id, the newest label winning, in first-seen order.

    Feedback on a text that re-appears in the stream arrives more than once; counting it twice
    would weight training towards repeats and let one text decide several holdout points.
    """
    latest: dict[str, Example] = {}
    for example in examples:
        latest.pop(example.id, None)
        latest[example.id] = example
    return list(latest.values())


def hash_split(examples: Sequence[Example], fraction: float) -> tuple[list[Example], list[Example]]:
    """(train, holdout) by a hash of the text id: stable across runs, no text on both sides."""
    cut = round(fraction * 1000)
    train, holdout = [], []
    for example in examples:
        (holdout if int(example.id[-6:], 16) % 1000 < cut else train).append(example)
    return train, holdout


def original_labels(parent: Path) -> set[str]:
    """Labels the serving model was trained on (its training data's label counts)."""
    from driftline.models.artifacts import read_meta

    meta = read_meta(parent)
    counts = meta.train_config.get("train_label_counts") or {}
    return set(counts) or set(meta.labels)


def update_split(
    recent: Sequence[Example], fresh: Sequence[Example] | None, fraction: float
) -> tuple[list[Example], list[Example]]:
    """(train, holdout): the holdout is a stable share of ``fresh`` (feedback from after the drift).

    A candidate is judged on the distribution it was built for, never on labels from before the
    change; everything not held out trains it. ``fresh`` None: the holdout comes from all of
    ``recent`` (an update without a drift, e.g. every N labels).
    """
    recent = dedupe_latest(recent)
    _, holdout = hash_split(dedupe_latest(fresh) if fresh is not None else recent, fraction)
    held = {e.id for e in holdout}
    return [e for e in recent if e.id not in held], holdout
