"""Join feedback labels to the predictions they judge, by event id.

Feedback arrives late (a human labels an article minutes or hours after it was classified) and
sometimes never matches anything (a typo'd id, an event from another deployment). The joiner keeps
recent predictions in memory for ``ttl_s``; older ones can still be found through an optional
``fallback`` lookup (ClickHouse ``labels``), so late feedback joins as long as the prediction is
kept anywhere. What cannot be joined comes back as ``Unjoined`` with a reason the caller sends to
the dead-letter topic; nothing here raises on bad input.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cachetools import TTLCache

from driftline.models.tasks import UnknownTaskError, get_task


class FeedbackError(ValueError):
    """A feedback record that cannot be used; ``reason`` is the dead-letter reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _to_ms(value: Any) -> int:
    """Milliseconds since the epoch from ms / seconds numbers or an ISO-8601 string."""
    if value is None or value == "":
        return int(time.time() * 1000)
    if isinstance(value, int | float):
        return int(value if value > 1e11 else value * 1000)
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise FeedbackError("invalid_feedback", f"unreadable timestamp {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def _get(record: Any, name: str, default: Any = None) -> Any:
    if isinstance(record, Mapping):
        return record.get(name, default)
    return getattr(record, name, default)


@dataclass(frozen=True, slots=True)
class Feedback:
    """A ground-truth label for one event (payload of the feedback topic)."""

    event_id: str
    task: str
    label: str
    source: str = "unknown"
    ts_ms: int = 0

    @classmethod
    def parse(cls, record: Any) -> Feedback:
        """Validate a feedback payload; raises ``FeedbackError`` with a dead-letter reason."""
        if not isinstance(record, Mapping):
            raise FeedbackError("invalid_feedback", f"expected an object, got {type(record).__name__}")
        missing = [key for key in ("event_id", "task", "label") if not record.get(key)]
        if missing:
            raise FeedbackError("invalid_feedback", f"missing field(s) {', '.join(missing)}")
        task, label = str(record["task"]), str(record["label"])
        try:
            labels = get_task(task).labels
        except UnknownTaskError as exc:
            raise FeedbackError("unknown_task", str(exc)) from exc
        if label not in labels:
            raise FeedbackError("unknown_label", f"{label!r} is not one of {labels} for {task}")
        return cls(
            event_id=str(record["event_id"]),
            task=task,
            label=label,
            source=str(record.get("source") or "unknown"),
            ts_ms=_to_ms(record.get("timestamp", record.get("ts_ms"))),
        )


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

    feedback: Feedback
    prediction: StoredPrediction
    first: bool = True

    @property
    def correct(self) -> bool:
        return self.feedback.label == self.prediction.label

    def to_row(self) -> dict[str, Any]:
        """A row for ClickHouse ``feedback`` (0003_online.sql)."""
        now_ms = int(time.time() * 1000)
        return {
            "task": self.feedback.task,
            "event_id": self.feedback.event_id,
            "label": self.feedback.label,
            "source": self.feedback.source,
            "feedback_time": datetime.fromtimestamp(self.feedback.ts_ms / 1000, UTC).replace(tzinfo=None),
            "feedback_ts_ms": self.feedback.ts_ms,
            "joined_ts_ms": now_ms,
            "predicted_label": self.prediction.label,
            "correct": int(self.correct),
            "confidence": float(self.prediction.confidence),
            "model_version": self.prediction.model_version,
            "adapter_hash": self.prediction.adapter_hash,
        }


@dataclass(frozen=True, slots=True)
class Unjoined:
    """Feedback that could not be joined; the caller routes it to the dead-letter topic."""

    reason: str  # unknown_event_id | invalid_feedback | unknown_task | unknown_label | task_mismatch
    detail: str
    record: Any = field(default=None, compare=False)

    def to_dead_letter(self) -> dict[str, Any]:
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
        """Match one feedback payload; never raises for bad input."""
        self.expire()
        try:
            feedback = Feedback.parse(record)
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


def clickhouse_lookup(client: Any, table: str = "labels") -> Lookup:
    """Fallback for ``FeedbackJoiner``: find a prediction in ClickHouse ``labels`` (clickhouse-driver)."""

    def lookup(task: str, event_id: str) -> dict[str, Any] | None:
        rows = client.execute(
            f"SELECT task, event_id, label, model_version, adapter_hash, confidence, text "
            f"FROM {table} FINAL WHERE task = %(task)s AND event_id = %(event_id)s LIMIT 1",
            {"task": task, "event_id": event_id},
        )
        if not rows:
            return None
        keys = ("task", "event_id", "label", "model_version", "adapter_hash", "confidence", "text")
        return dict(zip(keys, rows[0], strict=True))

    return lookup
