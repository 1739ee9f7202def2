"""Drift detection: one protocol (``DriftDetector``), one module per detector, one per-task monitor."""

from driftline.online.drift.base import DriftDetector, StateMismatchError
from driftline.online.drift.confidence import ConfidenceDetector
from driftline.online.drift.error_rate import ErrorRateDetector
from driftline.online.drift.label_mix import LabelMixDetector
from driftline.online.drift.monitor import DriftMonitor, build_detectors
from driftline.online.drift.unlearned_class import UnlearnedClassDetector

__all__ = [
    "ConfidenceDetector",
    "DriftDetector",
    "DriftMonitor",
    "ErrorRateDetector",
    "LabelMixDetector",
    "StateMismatchError",
    "UnlearnedClassDetector",
    "build_detectors",
]
