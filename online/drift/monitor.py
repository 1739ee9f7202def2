"""``DriftMonitor``: the per-task bundle of detectors that a streams agent calls on every event.

The agent owns I/O, this class the decisions; its ``state_dict`` is plain JSON, and ``load_state`` treats a
checkpoint as untrusted data.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, StrictInt

from driftline.online.config import DriftConfig, online_config
from driftline.online.drift.base import DriftDetector
from driftline.online.drift.confidence import ConfidenceDetector
from driftline.online.drift.error_rate import ErrorRateDetector
from driftline.online.drift.label_mix import LabelMixDetector
from driftline.online.drift.state import (
    STATE_VERSION,
    Count,
    StateMismatchError,
    StateModel,
    Text,
    check_header,
    validated,
)
from driftline.online.drift.unlearned_class import UnlearnedClassDetector
from driftline.schema.records import DriftEvent

log = logging.getLogger(__name__)

#: Most detector entries a monitor checkpoint may hold, and most fields in one entry.
MAX_DETECTORS = 16
MAX_DETECTOR_FIELDS = 64


class MonitorState(StateModel):
    """A ``DriftMonitor`` checkpoint; each detector's entry is validated by that detector."""

    format: StrictInt
    task: Text
    model_version: Text
    adapter_hash: Text
    predictions_seen: Count
    feedback_seen: Count
    detectors: Annotated[
        dict[Text, Annotated[dict[Text, Any], Field(max_length=MAX_DETECTOR_FIELDS)]],
        Field(max_length=MAX_DETECTORS),
    ]


def _get(record: Any, name: str, default: Any = None) -> Any:
    if isinstance(record, Mapping):
        return record.get(name, default)
    return getattr(record, name, default)


def top_probability(prediction: Any) -> float:
    """Probability of the predicted class from a ``Prediction``, a predictions-topic dict or a labels row."""
    confidence = _get(prediction, "confidence")
    if confidence is not None:
        return float(confidence)
    probabilities = _get(prediction, "probabilities")
    if isinstance(probabilities, Mapping):
        return float(probabilities.get(_get(prediction, "label"), max(probabilities.values(), default=0.0)))
    if probabilities:
        return float(max(probabilities))
    raise ValueError("prediction carries neither confidence nor probabilities")


def build_detectors(config: DriftConfig) -> dict[str, DriftDetector]:
    """Detectors enabled in ``config``, keyed by name (the one place that maps config to classes)."""
    detectors: dict[str, DriftDetector] = {}
    if config.error_rate.enabled:
        params = config.error_rate.model_dump(exclude={"enabled"})
        detectors["error_rate"] = ErrorRateDetector(**params)
    if config.confidence.enabled:
        detectors["confidence"] = ConfidenceDetector(**config.confidence.model_dump(exclude={"enabled"}))
    if config.label_mix.enabled:
        detectors["label_mix"] = LabelMixDetector(**config.label_mix.model_dump(exclude={"enabled"}))
    if config.unlearned_class.enabled:
        params = config.unlearned_class.model_dump(exclude={"enabled"})
        detectors["unlearned_class"] = UnlearnedClassDetector(**params)
    return detectors


class DriftMonitor:
    """Drift detectors for one task. Not thread-safe: one monitor per task per agent."""

    def __init__(self, task: str, config: DriftConfig | None = None) -> None:
        self.task = task
        self.config = config or online_config(task).drift
        self.detectors = build_detectors(self.config)
        self.model_version = ""
        self.adapter_hash = ""
        self.predictions_seen = 0
        self.feedback_seen = 0

    def _note_model(self, record: Any) -> None:
        version = str(_get(record, "model_version", "") or "")
        adapter = str(_get(record, "adapter_hash", "") or "")
        if not version and not adapter:
            return
        changed = (version, adapter) != (self.model_version, self.adapter_hash)
        if changed and self.model_version and self.config.reset_on_model_change:
            # New weights, new normal: old baselines would flag the improvement itself as drift.
            for detector in self.detectors.values():
                detector.reset()
        self.model_version, self.adapter_hash = version, adapter

    def _fire(self, name: str, signal: str, severity: str = "warning") -> DriftEvent:
        detector = self.detectors[name]
        details = dict(getattr(detector, "last_evidence", {}) or {})
        return DriftEvent(
            detector=name,
            task=self.task,
            statistic=detector.statistic,
            window=detector.window,
            model_version=self.model_version,
            adapter_hash=self.adapter_hash,
            event_count=detector.n_seen,
            signal=signal,
            severity=severity,
            details=details,
        )

    def update_prediction(self, prediction: Any) -> list[DriftEvent]:
        """Feed one prediction (``Prediction``, topic dict or labels row); return detections."""
        self._note_model(prediction)
        self.predictions_seen += 1
        events: list[DriftEvent] = []
        if "confidence" in self.detectors and self.detectors["confidence"].update(
            top_probability(prediction)
        ):
            events.append(self._fire("confidence", "mean_top_probability"))
        if "label_mix" in self.detectors:
            label = _get(prediction, "label")
            if label is None:
                raise ValueError("prediction has no label")
            if self.detectors["label_mix"].update(str(label)):
                events.append(self._fire("label_mix", "psi"))
        return events

    def update_feedback(
        self, correct: bool, model_version: str = "", adapter_hash: str = "", label: str | None = None
    ) -> list[DriftEvent]:
        """Feed one joined feedback outcome (was the served prediction right?) and its true ``label``."""
        if model_version or adapter_hash:
            self._note_model({"model_version": model_version, "adapter_hash": adapter_hash})
        self.feedback_seen += 1
        events: list[DriftEvent] = []
        detector = self.detectors.get("error_rate")
        if detector is not None and detector.update(0 if correct else 1):
            events.append(self._fire("error_rate", "error_rate", severity="critical"))
        unlearned = self.detectors.get("unlearned_class")
        if unlearned is not None and label is not None and unlearned.update((label, bool(correct))):
            events.append(self._fire("unlearned_class", "unlearned_class"))
        return events

    def state_dict(self) -> dict[str, Any]:
        """State of every detector of the task, for the changelogged table."""
        return {
            "format": STATE_VERSION,
            "task": self.task,
            "model_version": self.model_version,
            "adapter_hash": self.adapter_hash,
            "predictions_seen": self.predictions_seen,
            "feedback_seen": self.feedback_seen,
            "detectors": {name: detector.state_dict() for name, detector in self.detectors.items()},
        }

    def load_state(self, state: Any) -> dict[str, str]:
        """Resume from ``state_dict()`` output; return the detectors that start fresh, with the reason.

        ``StateMismatchError``, leaving the monitor as it was, when the checkpoint is not a valid
        monitor state of this task and format. A detector whose entry is refused starts fresh (and
        is logged); one missing from the checkpoint (enabled since) starts fresh too; one that is no
        longer enabled is dropped.
        """
        check_header(state, "task", self.task, "drift monitor")
        parsed = validated(MonitorState, state, "drift monitor")
        detectors = build_detectors(self.config)
        refused: dict[str, str] = {}
        for name, detector in detectors.items():
            if name not in parsed.detectors:
                continue
            try:
                detector.load_state(parsed.detectors[name])
            except StateMismatchError as exc:
                refused[name] = str(exc)
                log.warning(
                    "drift detector checkpoint refused, detector starts fresh",
                    extra={"task": self.task, "detector": name, "error": str(exc)[:300]},
                )
        self.detectors = detectors
        self.model_version = parsed.model_version
        self.adapter_hash = parsed.adapter_hash
        self.predictions_seen = parsed.predictions_seen
        self.feedback_seen = parsed.feedback_seen
        return refused
