"""Open taxonomy: when feedback names a class the task does not declare.

``new_labels`` (``reject``, ``propose``, ``accept``) decides; ``ProposalTracker`` is the rule, without I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from driftline.models.tasks import TaskConfig

Status = Literal["proposed", "accepted"]

MAX_LABEL_CHARS = 64


def usable_label(label: str) -> bool:
    """Whether ``label`` can name a new class: 1-64 printable characters, no edge whitespace."""
    return 0 < len(label) <= MAX_LABEL_CHARS and label.isprintable() and label.strip() == label


@dataclass(frozen=True)
class Proposal:
    """A label to record and announce: ``status`` follows the task's ``new_labels`` mode."""

    task: str
    label: str
    status: Status
    examples: tuple[str, ...]


@dataclass
class ProposalTracker:
    """Counts the distinct events that carried each undeclared label; proposes it once."""

    max_examples: int = 5
    max_pending: int = 10_000  # undeclared labels counted at once (typos included); oldest dropped
    _examples: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    _known: set[tuple[str, str]] = field(default_factory=set)

    def known(self, task: str, labels: Iterable[str]) -> None:
        """These labels of ``task`` are recorded already (proposed or accepted): never announce them."""
        self._known.update((task, label) for label in labels)

    def observe(self, task: TaskConfig, label: str, event_id: str) -> Proposal | None:
        """Feedback of ``task`` named ``label`` for ``event_id``: the proposal to make now, if any."""
        if label in task.labels or task.new_labels == "reject" or (task.name, label) in self._known:
            return None
        if (task.name, label) not in self._examples and len(self._examples) >= self.max_pending:
            del self._examples[next(iter(self._examples))]
        examples = self._examples.setdefault((task.name, label), [])
        if event_id not in examples:
            examples.append(event_id)
        if len(examples) < task.new_label_min_examples:
            return None
        self._known.add((task.name, label))
        del self._examples[(task.name, label)]
        status: Status = "accepted" if task.new_labels == "accept" else "proposed"
        return Proposal(task.name, label, status, tuple(examples[: self.max_examples]))
