"""The ``task_labels`` table (0008): read the open taxonomy's labels, accept one.

Used by ``driftline labels list|accept`` and the updater; ``label_set`` is declared then accepted labels.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Any

from driftline.models.tasks import TaskConfig
from driftline.online.labels.taxonomy import MAX_LABEL_CHARS, usable_label
from driftline.schema.records import TaskLabelRecord, insert_sql
from driftline.schema.timestamps import now_ms

SELECT_SQL = (
    "SELECT task, label, status, source, examples, proposed_ts_ms, updated_ts_ms FROM task_labels FINAL "
    "WHERE task = %(task)s ORDER BY updated_ts_ms, label"
)
FEEDBACK_SQL = "SELECT label, count() FROM feedback FINAL WHERE task = %(task)s GROUP BY label"


class LabelError(ValueError):
    """A label that cannot be accepted (closed taxonomy, declared already, not a name)."""


@dataclass(frozen=True)
class TaskLabel:
    """One row of ``task_labels`` with the number of feedback labels that name it."""

    task: str
    label: str
    status: str
    source: str
    examples: list[str]
    proposed_ts_ms: int
    updated_ts_ms: int
    feedback: int = 0


def task_labels(client: Any, task: str, *, feedback: bool = True) -> list[TaskLabel]:
    """The task's proposed and accepted labels, oldest change first, with their feedback counts
    (``feedback=False``: without, and without the count over the ``feedback`` table)."""
    counts = dict(client.execute(FEEDBACK_SQL, {"task": task})) if feedback else {}
    return [
        TaskLabel(*row, feedback=int(counts.get(row[1], 0)))
        for row in client.execute(SELECT_SQL, {"task": task})
    ]


def label_set(task: TaskConfig, rows: list[TaskLabel]) -> list[str]:
    """Declared labels, then the accepted ones in the order they were accepted."""
    accepted = [r.label for r in sorted(rows, key=lambda r: r.updated_ts_ms) if r.status == "accepted"]
    return [*task.labels, *(label for label in accepted if label not in task.labels)]


def accept_label(client: Any, task: TaskConfig, label: str, *, who: str | None = None) -> TaskLabelRecord:
    """Record ``label`` as accepted for ``task`` (``LabelError`` when it cannot be)."""
    if task.new_labels == "reject":
        raise LabelError(
            f"{task.name} has a closed taxonomy (new_labels: reject in tasks.yaml): "
            "set propose or accept first"
        )
    if label in task.labels:
        raise LabelError(f"{label!r} is already one of {task.name}'s declared labels")
    if not usable_label(label):
        raise LabelError(f"{label!r} is not a usable label name (1-{MAX_LABEL_CHARS} printable characters)")
    existing = {r.label: r for r in task_labels(client, task.name, feedback=False)}
    before = existing.get(label)
    record = TaskLabelRecord(
        task=task.name,
        label=label,
        status="accepted",
        source=f"cli:{who or getpass.getuser()}",
        examples=list(before.examples) if before else [],
        proposed_ts_ms=before.proposed_ts_ms if before else now_ms(),
    )
    if before is not None:
        record = record.model_copy(
            update={"updated_ts_ms": max(record.updated_ts_ms, before.updated_ts_ms + 1)}
        )
    client.execute(insert_sql(TaskLabelRecord.TABLE, TaskLabelRecord.COLUMNS), [record.to_row()])
    return record
