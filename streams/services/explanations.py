"""The explainer service: explanations for the events that need one, off the serving path.

Reads predictions and label requests in its own consumer group, explains what the task's policy selects,
stores rows in ClickHouse, then commits (at-least-once; duplicates collapse).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import ValidationError

from driftline.clients import kafka_consumer
from driftline.models.explain.policy import ExplainReason, explain_reason
from driftline.models.explain.pool import ExplainerPool, ExplainRequest
from driftline.models.tasks import ExplainSettings, UnknownTaskError, get_task
from driftline.schema.records import ExplanationRecord, LabelRequestRecord, PredictionRecord
from driftline.settings import Settings
from driftline.streams.sinks.base import BatchingSink

log = logging.getLogger(__name__)

Policy = Callable[[str], ExplainSettings]
Record = TypeVar("Record", PredictionRecord, LabelRequestRecord)


def task_policy(task: str) -> ExplainSettings:
    """The declared task's explain settings; the defaults for a task ``tasks.yaml`` does not declare."""
    try:
        return get_task(task).explain
    except UnknownTaskError:
        return ExplainSettings()


@dataclass
class BatchReport:
    """What one batch did: the progress line's fields."""

    read: int = 0
    unreadable: int = 0
    selected: int = 0
    explained: int = 0
    errors: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    compute_s: float = 0.0
    store_s: float = 0.0

    def fields(self) -> dict[str, Any]:
        """Flat log fields (reasons as ``reason=count`` pairs)."""
        return {
            "read": self.read,
            "unreadable": self.unreadable,
            "selected": self.selected,
            "explained": self.explained,
            "errors": self.errors,
            "reasons": " ".join(f"{k}={v}" for k, v in sorted(self.reasons.items())),
            "compute_s": round(self.compute_s, 3),
            "store_s": round(self.store_s, 3),
        }


class ExplainerService:
    """Predictions topic in, ``explanations`` rows out, offsets committed once the rows are stored."""

    def __init__(
        self,
        settings: Settings,
        pool: ExplainerPool,
        sink: BatchingSink,
        *,
        policy: Policy = task_policy,
    ) -> None:
        self.settings = settings
        self.config = settings.explainer
        self.topic = settings.kafka.topics.predictions
        self.requests_topic = settings.kafka.topics.label_requests
        self.pool = pool
        self.sink = sink
        self.policy = policy
        self._policies: dict[str, ExplainSettings] = {}
        self.totals: Counter[str] = Counter()

    def parse(
        self, values: Sequence[bytes | None], report: BatchReport, model: type[Record] = PredictionRecord
    ) -> list[Record]:
        """The batch's records of type ``model``; unreadable ones are counted and logged."""
        records = []
        for value in values:
            try:
                records.append(model.model_validate_json(value or b""))
            except ValidationError as exc:
                report.unreadable += 1
                log.error(f"unreadable {model.TABLE} record skipped", extra={"error": str(exc)[:300]})
        return records

    def _reason(self, record: Record) -> ExplainReason | None:
        if record.task not in self._policies:
            self._policies[record.task] = self.policy(record.task)
        return explain_reason(self._policies[record.task], record.task, record.event_id, record.confidence)

    def select(
        self,
        records: Sequence[PredictionRecord],
        report: BatchReport,
        label_requests: Sequence[LabelRequestRecord] = (),
    ) -> list[ExplainRequest]:
        """The requests for the records their task's policy selects, and for the label requests
        whose prediction it does not select."""
        requests = []
        for record in records:
            reason = self._reason(record)
            if reason is not None:
                report.reasons[reason.value] += 1
                requests.append(ExplainRequest.from_prediction(record, reason.value))
        for request in label_requests:
            if self._reason(request) is None:  # else explained from its prediction, same key
                report.reasons[ExplainReason.LABEL_REQUEST.value] += 1
                requests.append(ExplainRequest.from_prediction(request, ExplainReason.LABEL_REQUEST.value))
        report.selected = len(requests)
        return requests

    async def process(
        self, values: Sequence[bytes | None], request_values: Sequence[bytes | None] = ()
    ) -> BatchReport:
        """Select, explain and store one batch (predictions, label requests); returns once its rows
        are stored."""
        report = BatchReport(read=len(values) + len(request_values))
        label_requests = self.parse(request_values, report, LabelRequestRecord)
        requests = self.select(self.parse(values, report), report, label_requests)
        rows: list[ExplanationRecord] = []
        if requests:
            started = time.perf_counter()
            rows = await asyncio.to_thread(self.pool.explain, requests)
            report.compute_s = time.perf_counter() - started
            report.errors = sum(1 for row in rows if row.error)
            report.explained = len(rows) - report.errors
            started = time.perf_counter()
            await self.sink.add([row.to_row() for row in rows])
            await self.sink.flush()
            report.store_s = time.perf_counter() - started
        for key, value in report.fields().items():
            if isinstance(value, int):
                self.totals[key] += value
        return report

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until ``stop`` is set; commits each batch's offsets after its rows are stored."""
        from aiokafka.errors import CommitFailedError

        stop = stop or asyncio.Event()
        consumer = kafka_consumer(
            self.topic,
            self.requests_topic,
            settings=self.settings,
            group_id=self.config.group_id,
            enable_auto_commit=False,
            auto_offset_reset=self.config.auto_offset_reset,
            max_partition_fetch_bytes=32 << 20,
            fetch_max_bytes=64 << 20,
        )
        await consumer.start()
        log.info(
            "explainer started",
            extra={
                "topics": f"{self.topic},{self.requests_topic}",
                "group_id": self.config.group_id,
                "repository": str(self.pool.repository),
            },
        )
        try:
            while not stop.is_set():
                batches = await consumer.getmany(
                    timeout_ms=int(self.config.poll_s * 1000), max_records=self.config.max_batch
                )
                if not batches:
                    continue
                values = [m.value for tp, ms in batches.items() if tp.topic == self.topic for m in ms]
                asked = [m.value for tp, ms in batches.items() if tp.topic != self.topic for m in ms]
                report = await self.process(values, asked)
                try:
                    await consumer.commit({tp: messages[-1].offset + 1 for tp, messages in batches.items()})
                except CommitFailedError as exc:  # rebalanced meanwhile: the new owner reads it again
                    log.warning(
                        "commit failed, the batch will be read again", extra={"error": str(exc)[:300]}
                    )
                totals = {f"{key}_total": self.totals[key] for key in ("read", "explained", "errors")}
                log.info(
                    "explainer batch",
                    extra={**report.fields(), **totals, "loaded_versions": len(self.pool.loaded)},
                )
        finally:
            await self.sink.close()
            await consumer.stop()
            log.info("explainer stopped", extra=dict(self.totals))
