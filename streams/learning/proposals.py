"""The worker side of the open taxonomy: joined feedback with an undeclared label -> proposals.

``ClassProposals`` publishes one acked alert per proposal, then writes the ``task_labels`` row.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from driftline.models.tasks import TaskConfig, get_task
from driftline.online.labels.join import JoinedFeedback
from driftline.online.labels.taxonomy import Proposal, ProposalTracker
from driftline.schema.records import AlertRecord, TaskLabelRecord
from driftline.schema.timestamps import now_ms
from driftline.streams.checkpoint import Checkpoint
from driftline.streams.sinks.base import BatchingSink

log = logging.getLogger(__name__)

KNOWN_SQL = "SELECT task, label FROM task_labels FINAL"


def proposal_alert(proposal: Proposal) -> AlertRecord:
    """The alert announcing ``proposal``."""
    accepted = proposal.status == "accepted"
    command = f"driftline labels accept {proposal.task} {proposal.label}"
    return AlertRecord(
        alert_id=f"class_{proposal.status}:{proposal.task}:{proposal.label}",
        kind=f"class_{proposal.status}",
        task=proposal.task,
        created_ts_ms=now_ms(),
        severity="info" if accepted else "warning",
        subject=f"{proposal.task}: new class {proposal.label!r} {proposal.status}",
        message=(
            f"feedback named {proposal.label!r}, which {proposal.task} does not declare, on "
            f"{len(proposal.examples)} events; "
            + ("accepted (new_labels: accept)" if accepted else f"accept it with `{command}`")
        ),
        evidence={"label": proposal.label, "status": proposal.status, "examples": list(proposal.examples)},
    )


class ClassProposals:
    """Feeds joined feedback to the tracker; publishes and records what it proposes."""

    def __init__(
        self,
        alerts_topic: Any,
        sink: BatchingSink,
        connect: Callable[[], Any],
        *,
        tracker: ProposalTracker | None = None,
        task_of: Callable[[str], TaskConfig] = get_task,
    ) -> None:
        self.alerts_topic = alerts_topic
        self.sink = sink
        self._connect = connect
        self.tracker = tracker or ProposalTracker()
        self._task_of = task_of
        self._loaded = False

    def _load_known(self) -> None:
        client = self._connect()
        try:
            for task, label in client.execute(KNOWN_SQL):
                self.tracker.known(task, [label])
        finally:
            client.disconnect()

    async def load_known(self) -> None:
        """Mark the labels ``task_labels`` holds as known (once; retried while ClickHouse fails)."""
        if self._loaded:
            return
        try:
            await asyncio.to_thread(self._load_known)
            self._loaded = True
        except Exception as exc:
            log.warning("task_labels not read; will retry", extra={"error": f"{type(exc).__name__}"})

    async def __call__(self, joined: Sequence[JoinedFeedback]) -> list[Proposal]:
        """Observe one batch of joined feedback; returns the proposals published."""
        candidates = [j for j in joined if j.feedback.label not in self._task_of(j.feedback.task).labels]
        if not candidates:
            return []
        await self.load_known()
        proposals = []
        for j in candidates:
            proposal = self.tracker.observe(
                self._task_of(j.feedback.task), j.feedback.label, j.feedback.event_id
            )
            if proposal is not None:
                proposals.append(proposal)
        for proposal in proposals:
            alert = proposal_alert(proposal)
            sent = await self.alerts_topic.send(
                key=f"{proposal.task}:{proposal.label}".encode(), value=alert.model_dump_json().encode()
            )
            await Checkpoint.produced([sent])
            record = TaskLabelRecord(
                task=proposal.task,
                label=proposal.label,
                status=proposal.status,
                source="feedback",
                examples=list(proposal.examples),
            )
            await self.sink.add([record.to_row()])
            log.warning("class %s", proposal.status, extra={"task": proposal.task, "label": proposal.label})
        return proposals
