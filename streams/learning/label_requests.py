"""The classify hook that asks people for labels: predictions -> label-requests topic.

Per task a ``LabelRequester`` picks events under its budget; the batch is done once Kafka acked its requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from driftline.online.config import LabelRequestConfig, online_config
from driftline.online.labels.request_policy import LabelCandidate, LabelRequester
from driftline.schema.records import DriftEvent, LabelRequestRecord, PredictionRecord
from driftline.streams.checkpoint import Checkpoint


class RequestLabels:
    """Prediction hook: selects label requests per task and publishes them."""

    def __init__(
        self,
        topic: Any,
        *,
        config_of: Callable[[str], LabelRequestConfig] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topic = topic
        self._config_of = config_of or (lambda task: online_config(task).label_requests)
        self._clock = clock
        self._requesters: dict[str, LabelRequester] = {}
        self._last_drift: dict[str, float] = {}

    def requester(self, task: str) -> LabelRequester:
        """The task's policy (created on first use, then kept: it carries the budget credit)."""
        if task not in self._requesters:
            self._requesters[task] = LabelRequester(task, self._config_of(task))
        return self._requesters[task]

    def drift_seen(self, event: DriftEvent) -> None:
        """A drift event of ``event.task``: boost its budget for the configured time."""
        self._last_drift[event.task] = self._clock()

    def drift_active(self, task: str) -> bool:
        """Whether a drift of ``task`` was seen within its ``drift_boost_s``."""
        seen = self._last_drift.get(task)
        return seen is not None and self._clock() - seen <= self.requester(task).config.drift_boost_s

    def requests(self, records: Sequence[PredictionRecord]) -> list[LabelRequestRecord]:
        """The label requests of one classified batch (grouped by task, in the batch's order)."""
        by_task: dict[str, list[PredictionRecord]] = {}
        for r in records:
            by_task.setdefault(r.task, []).append(r)
        out: list[LabelRequestRecord] = []
        for task, rows in by_task.items():
            active = self.drift_active(task)
            candidates = [
                LabelCandidate(r.event_id, r.text, dict(zip(r.label_names, r.probabilities, strict=True)))
                for r in rows
            ]
            by_id = {r.event_id: r for r in rows}
            for pick in self.requester(task).select(candidates, drift_active=active):
                r = by_id[pick.event_id]
                out.append(
                    LabelRequestRecord(
                        task=task,
                        event_id=r.event_id,
                        text=r.text,
                        label=r.label,
                        confidence=r.confidence,
                        label_names=r.label_names,
                        probabilities=r.probabilities,
                        model_name=r.model_name,
                        model_version=r.model_version,
                        adapter_hash=r.adapter_hash,
                        reason=pick.reason,
                        uncertainty=pick.uncertainty,
                        sampling_probability=pick.sampling_probability or 0.0,
                        drift_active=active,
                        event_ts_ms=r.event_ts_ms,
                    )
                )
        return out

    async def __call__(self, records: Sequence[PredictionRecord]) -> None:
        """Publish the batch's requests and wait for Kafka's acks."""
        pending = []
        for request in self.requests(records):
            pending.append(
                await self.topic.send(
                    key=f"{request.task}:{request.event_id}".encode(),
                    value=request.model_dump_json().encode(),
                    force=True,
                )
            )
        await Checkpoint.produced(pending)
