"""Join feedback labels to the predictions they judge, by event id.

``FeedbackJoiner`` keeps recent predictions for ``ttl_s`` (with an optional lookup for older ones) and returns
``Unjoined`` with a reason instead of raising; ``check_feedback`` is the one feedback validation.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cachetools import TTLCache
from pydantic import ValidationError

from driftline.models.tasks import load_tasks
from driftline.online.labels.taxonomy import MAX_LABEL_CHARS, usable_label
from driftline.schema.events import FeedbackEvent
from driftline.schema.records import FeedbackRecord


class FeedbackError(ValueError):
    """A feedback record that cannot be used; ``reason`` is the dead-letter reason code."""

    def __init__(self, reason: str, detail: str, error_type: str = "FeedbackError") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.error_type = error_type


def check_feedback(event: FeedbackEvent) -> FeedbackEvent:
    """The one task/label check of feedback (``FeedbackError``): the task must be declared, and so
    must the label unless the task's taxonomy is open (``new_labels`` propose or accept)."""
    tasks = load_tasks()
    if event.task not in tasks:
        raise FeedbackError(
            "unknown_task", f"task {event.task!r} is not one of {sorted(tasks)}", "UnknownTask"
        )
    task = tasks[event.task]
    if event.label not in task.labels and task.new_labels != "reject" and not usable_label(event.label):
        raise FeedbackError(
            "unknown_label",
            f"label {event.label!r} is not declared for task {event.task!r} and cannot name a new class "
            f"(1-{MAX_LABEL_CHARS} printable characters)",
            "UnknownLabel",
        )
    if event.label not in task.labels and task.new_labels == "reject":
        raise FeedbackError(
            "unknown_label",
            f"label {event.label!r} is not one of {tasks[event.task].labels} for task {event.task!r}",
            "UnknownLabel",
        )
    return event


def parse_feedback(record: Any) -> FeedbackEvent:
    """Validate a feedback payload: ``FeedbackEvent`` shape, then ``check_feedback`` (``FeedbackError``)."""
    if isinstance(record, FeedbackEvent):
        return record  # validated when it was decoded
    if not isinstance(record, Mapping):
        raise FeedbackError("invalid_feedback", f"expected an object, got {type(record).__name__}")
    try:
        event = FeedbackEvent.model_validate(record)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<feedback>'}: {e['msg']}"
            for e in exc.errors(include_url=False)[:5]
        )
        raise FeedbackError("invalid_feedback", problems, "ValidationError") from exc
    return check_feedback(event)


def _get(record: Any, name: str, default: Any = None) -> Any:
    if isinstance(record, Mapping):
        return record.get(name, default)
    return getattr(record, name, default)


@dataclass(frozen=True, slots=True)
class StoredPrediction:
    """What the joiner remembers of a prediction: enough to score it and attribute it to a model."""

    event_id: str
    task: str
    label: str
    model_version: str = ""
    adapter_hash: str = ""
    confidence: float = 0.0
    text: str = ""
    stored_ts_ms: int = 0

    @classmethod
    def from_record(cls, record: Any, now_ms: int | None = None) -> StoredPrediction:
        """From a predictions-topic payload or a ClickHouse ``labels`` row (dict or object)."""
        event_id, task, label = _get(record, "event_id"), _get(record, "task"), _get(record, "label")
        if not event_id or not task or not label:
            raise ValueError("a prediction needs event_id, task and label")
        return cls(
            event_id=str(event_id),
            task=str(task),
            label=str(label),
            model_version=str(_get(record, "model_version", "") or ""),
            adapter_hash=str(_get(record, "adapter_hash", "") or ""),
            confidence=float(_get(record, "confidence", 0.0) or 0.0),
            text=str(_get(record, "text", "") or ""),
            stored_ts_ms=now_ms if now_ms is not None else int(time.time() * 1000),
        )


@dataclass(frozen=True, slots=True)
class JoinedFeedback:
    """Feedback matched with its prediction. ``first`` is False for a repeated label on one event."""

    feedback: FeedbackEvent
    prediction: StoredPrediction
    first: bool = True

    @property
    def correct(self) -> bool:
        """Whether the prediction got the feedback's label."""
        return self.feedback.label == self.prediction.label

    def record(self) -> FeedbackRecord:
        """The ``feedback`` table record of this join (joined now)."""
        return FeedbackRecord(
            task=self.feedback.task,
            event_id=self.feedback.event_id,
            label=self.feedback.label,
            source=self.feedback.source,
            feedback_ts_ms=self.feedback.ts_ms(),
            predicted_label=self.prediction.label,
            correct=self.correct,
            confidence=self.prediction.confidence,
            model_version=self.prediction.model_version,
            adapter_hash=self.prediction.adapter_hash,
        )


@dataclass(frozen=True, slots=True)
class Unjoined:
    """Feedback that could not be joined; the caller routes it to the dead-letter topic."""

    reason: str  # unknown_event_id | invalid_feedback | unknown_task | unknown_label | task_mismatch
    detail: str
    record: Any = field(default=None, compare=False)

    def to_dead_letter(self) -> dict[str, Any]:
        """Reason, error type and detail for the dead-letter record."""
        return {"reason": self.reason, "error_type": "FeedbackJoinError", "detail": self.detail}


Lookup = Callable[[str, str], Any | None]  # (task, event_id) -> prediction record or None


class FeedbackJoiner:
    """In-memory prediction store with TTL and a size cap, plus an optional slow-path lookup.

    Predictions live in a ``cachetools.TTLCache`` (TTL and size cap). One joiner per worker; the
    streams agent feeds it every prediction it publishes and every feedback event it consumes.
    """

    def __init__(
        self,
        ttl_s: float = 6 * 3600,
        max_predictions: int = 200_000,
        fallback: Lookup | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl_ms = int(ttl_s * 1000)
        self.max_predictions = max_predictions
        self.fallback = fallback
        self._clock = clock
        self._store: TTLCache[tuple[str, str], StoredPrediction] = TTLCache(
            maxsize=max_predictions, ttl=ttl_s, timer=clock
        )
        self._joined: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.stats = {"joined": 0, "joined_fallback": 0, "unjoined": 0, "expired": 0}

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def __len__(self) -> int:
        return len(self._store)

    def add_prediction(self, record: Any) -> StoredPrediction:
        """Remember a prediction (predictions-topic payload or ``labels`` row) for later joins."""
        prediction = StoredPrediction.from_record(record, now_ms=self._now_ms())
        key = (prediction.task, prediction.event_id)
        self.expire()
        self._store.pop(key, None)  # a reprocessed event moves to the back with its new prediction
        before = len(self._store)
        self._store[key] = prediction  # evicts the oldest above max_predictions
        self.stats["expired"] += before + 1 - len(self._store)
        return prediction

    def expire(self) -> int:
        """Drop predictions older than the TTL; returns how many went."""
        dropped = len(self._store.expire())
        self.stats["expired"] += dropped
        return dropped

    def _mark_joined(self, key: tuple[str, str]) -> bool:
        first = key not in self._joined
        self._joined[key] = None
        self._joined.move_to_end(key)
        while len(self._joined) > self.max_predictions:
            self._joined.popitem(last=False)
        return first

    def join(self, record: Any) -> JoinedFeedback | Unjoined:
        """Match one feedback event (or raw payload, validated here); never raises for bad input."""
        self.expire()
        try:
            feedback = parse_feedback(record)
        except FeedbackError as exc:
            self.stats["unjoined"] += 1
            return Unjoined(exc.reason, exc.detail, record)
        key = (feedback.task, feedback.event_id)
        prediction = self._store.get(key)
        if prediction is None and self.fallback is not None:
            found = self.fallback(feedback.task, feedback.event_id)
            if found is not None:
                prediction = StoredPrediction.from_record(found, now_ms=self._now_ms())
                self.stats["joined_fallback"] += 1
        if prediction is None:
            self.stats["unjoined"] += 1
            return Unjoined(
                "unknown_event_id",
                f"no prediction kept for {feedback.task}/{feedback.event_id} "
                f"(ttl {self.ttl_ms // 1000}s{', fallback searched' if self.fallback else ''})",
                record,
            )
        if prediction.task != feedback.task:  # pragma: no cover - keys include the task
            return Unjoined("task_mismatch", f"{prediction.task} != {feedback.task}", record)
        self.stats["joined"] += 1
        return JoinedFeedback(feedback, prediction, first=self._mark_joined(key))
