"""Drift detection: one protocol (``DriftDetector``), one module per detector, one per-task monitor."""

from online.drift.base import DriftDetector, DriftEvent, StateMismatchError
from online.drift.confidence import ConfidenceDetector
from online.drift.error_rate import ErrorRateDetector
from online.drift.label_mix import LabelMixDetector
from online.drift.monitor import DriftMonitor, build_detectors

__all__ = [
    "ConfidenceDetector",
    "DriftDetector",
    "DriftEvent",
    "DriftMonitor",
    "ErrorRateDetector",
    "LabelMixDetector",
    "StateMismatchError",
    "build_detectors",
]
