"""``pick_engine``: the fastest engine that keeps accuracy and agreement wins; else the torch reference."""

from __future__ import annotations

import pytest

from driftline.models.engines import (
    REFERENCE_ENGINE,
    EngineMeasure,
    pick_engine,
)


def _m(speed: float, accuracy: float, agreement: float = 1.0, error: str | None = None) -> EngineMeasure:
    if error is not None:
        return EngineMeasure(error=error)
    return EngineMeasure(sentences_per_s=speed, accuracy=accuracy, agreement=agreement, max_prob_diff=0.0)


def test_pick_takes_the_fastest_engine_that_keeps_accuracy_and_agreement() -> None:
    measures = {
        REFERENCE_ENGINE: _m(40, 0.900),
        "ort-fp32": _m(50, 0.900),
        "ort-int8": _m(90, 0.896),  # 0.4 points below torch: within the 0.5 tolerance
        "ort-fused-int8": _m(120, 0.880),  # fastest, but 2 points less accurate
        "openvino-int8": _m(150, 0.900, agreement=0.95),  # fastest, but disagrees with torch too often
        "openvino-fp32": _m(0, 0, error="RuntimeError: cannot compile"),
    }
    assert pick_engine(measures) == "ort-int8"
    assert pick_engine(measures, accuracy_tolerance=0.05) == "ort-fused-int8"
    assert pick_engine(measures, min_agreement=0.9) == "openvino-int8"


def test_pick_falls_back_to_torch_when_nothing_qualifies() -> None:
    measures = {
        REFERENCE_ENGINE: _m(40, 0.90),
        "ort-int8": _m(90, 0.85),
        "ort-fused-int8": _m(120, 0.90, agreement=0.90),
        "openvino-fp32": _m(0, 0, error="RuntimeError: boom"),
    }
    assert pick_engine(measures) == REFERENCE_ENGINE
    assert pick_engine({REFERENCE_ENGINE: _m(40, 0.9), "ort-fp32": _m(30, 0.9)}) == REFERENCE_ENGINE
    with pytest.raises(ValueError, match="reference"):
        pick_engine({"ort-fp32": _m(30, 0.9)})
