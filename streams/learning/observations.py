"""Drift watching: one ``DriftMonitor`` per task, fed by observation batches, checkpointed per batch.

Observations are keyed by task, so one worker sees all of a task's signal in order; state is in a Faust table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from driftline.online.drift import DriftMonitor
from driftline.schema.records import DriftEvent

log = logging.getLogger(__name__)


class PredictionObservation(BaseModel):
    """What the drift monitor needs of one prediction."""

    label: str
    confidence: float
    model_version: str = ""
    adapter_hash: str = ""


class FeedbackObservation(BaseModel):
    """What the drift monitor needs of one joined feedback."""

    event_id: str
    correct: bool
    model_version: str = ""
    adapter_hash: str = ""
    label: str | None = None  # the true label (the unlearned-class detector); None: not carried


class ObservationBatch(BaseModel):
    """What the observations topic carries (key: the task): a batch's predictions and/or feedback."""

    task: str
    predictions: list[PredictionObservation] = Field(default_factory=list)
    feedback: list[FeedbackObservation] = Field(default_factory=list)


@dataclass
class _Cached:
    seq: int
    monitor: DriftMonitor
    restored: bool  # True when built from a checkpoint rather than fresh
    refused: dict[str, str] = field(default_factory=dict)  # detectors whose checkpoint was refused


def _read_checkpoint(saved: Any) -> tuple[int, Any, str]:
    """``(seq, state, problem)`` of a stored record: ``(0, None, "")`` when there is none."""
    if not saved:
        return 0, None, ""
    if not isinstance(saved, Mapping):
        return 0, None, f"checkpoint record is a {type(saved).__name__}, not a JSON object"
    seq = saved.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        return 0, None, f"checkpoint record has seq {str(seq)[:40]!r}, not a count"
    if saved.get("state") is None:
        return seq, None, "checkpoint record has no state"
    return seq, saved["state"], ""


class DriftWatch:
    """Applies observation batches to per-task monitors; returns the drift events they raise."""

    def __init__(self, store: MutableMapping[str, Any]) -> None:
        self.store = store
        self._cache: dict[str, _Cached] = {}
        self.stats = {
            "batches": 0,
            "predictions": 0,
            "feedback": 0,
            "bad_observations": 0,
            "drift": 0,
            "stale_feedback": 0,
        }

    def monitor(self, task: str) -> _Cached:
        """The task's monitor, reloaded when the store's checkpoint moved on.

        The store's values come back from a Kafka changelog, so they are validated as data: a
        record that is not a checkpoint, or whose state the monitor refuses, is logged and the task
        starts from a fresh monitor (the next step overwrites the record). A refused detector
        inside an otherwise valid checkpoint starts fresh on its own (``DriftMonitor.load_state``).
        """
        saved = self.store.get(task)
        seq, state, problem = _read_checkpoint(saved)
        cached = self._cache.get(task)
        if cached is not None and cached.seq == seq:
            return cached
        monitor = DriftMonitor(task)
        restored = False
        refused: dict[str, str] = {}
        if state is not None:
            try:
                refused = monitor.load_state(state)
                restored = True
            except Exception as exc:  # a checkpoint of an older format, another task, or not valid state
                monitor = DriftMonitor(task)
                problem = str(exc)
        if problem:
            log.warning(
                "drift checkpoint not usable, starting fresh",
                extra={"task": task, "error": problem[:300]},
            )
        cached = _Cached(seq, monitor, restored, refused)
        self._cache[task] = cached
        return cached

    def step(self, batches: Sequence[ObservationBatch]) -> list[DriftEvent]:
        """Apply ``batches`` in order, checkpoint every task touched once, return the detections."""
        events: list[DriftEvent] = []
        touched: set[str] = set()
        for batch in batches:
            self.stats["batches"] += 1
            cached = self.monitor(batch.task)
            touched.add(batch.task)
            for p in batch.predictions:
                events.extend(self._apply(cached.monitor.update_prediction, p.model_dump()))
                self.stats["predictions"] += 1
            for f in batch.feedback:
                events.extend(self._feedback(cached.monitor, f))
        for task in touched:
            cached = self._cache[task]
            cached.seq += 1
            self.store[task] = {
                "seq": cached.seq,
                "saved_ts_ms": int(time.time() * 1000),
                "state": cached.monitor.state_dict(),
            }
        self.stats["drift"] += len(events)
        return events

    def _feedback(self, monitor: DriftMonitor, f: FeedbackObservation) -> list[DriftEvent]:
        """Feed one outcome, unless it judges a model the task no longer serves.

        Predictions decide which model is current (``DriftMonitor`` re-baselines on a change).
        Late feedback on a replaced version must not switch the monitor back - that would reset
        every detector twice per stale label - nor count against the new version's error rate.
        """
        current = (monitor.model_version, monitor.adapter_hash)
        judged = (f.model_version, f.adapter_hash)
        if any(current) and any(judged) and judged != current:
            self.stats["stale_feedback"] += 1
            return []
        self.stats["feedback"] += 1
        return self._apply(monitor.update_feedback, f.correct, f.model_version, f.adapter_hash, f.label)

    def _apply(self, update: Any, *args: Any) -> list[DriftEvent]:
        try:
            return list(update(*args))
        except (ValueError, TypeError) as exc:  # e.g. a confidence outside [0, 1]: skip, keep going
            self.stats["bad_observations"] += 1
            log.warning("observation skipped", extra={"error": str(exc)[:300]})
            return []

    def status(self) -> dict[str, Any]:
        """Monitors this worker currently runs (the tasks whose observations partition it owns)."""
        tasks = {}
        for task, cached in self._cache.items():
            m = cached.monitor
            tasks[task] = {
                "seq": cached.seq,
                "restored": cached.restored,
                "refused_detectors": sorted(cached.refused),
                "model_version": m.model_version,
                "predictions_seen": m.predictions_seen,
                "feedback_seen": m.feedback_seen,
                "detectors": {
                    name: {"n_seen": d.n_seen, "statistic": round(float(d.statistic), 5), "window": d.window}
                    for name, d in m.detectors.items()
                },
            }
        return {"stats": dict(self.stats), "tasks": tasks}
