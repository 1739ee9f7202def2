"""Conformance tests every DriftDetector must pass (River style: one suite, all detectors)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from driftline.online.drift import ConfidenceDetector, DriftDetector, ErrorRateDetector, LabelMixDetector
from driftline.online.drift.base import StateMismatchError


@dataclass
class Case:
    make: Callable[[], DriftDetector]
    before: Callable[[random.Random], Any]  # stationary regime
    after: Callable[[random.Random], Any]  # shifted regime
    max_delay: int  # events after the shift within which the alarm must come


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


LABELS = ["business", "politics", "sport", "tech"]

CASES = {
    "error_rate_adwin": Case(
        ErrorRateDetector,
        lambda r: int(r.random() < 0.05),
        lambda r: int(r.random() < 0.4),
        150,
    ),
    "error_rate_ddm": Case(
        lambda: ErrorRateDetector(method="ddm"),
        lambda r: int(r.random() < 0.05),
        lambda r: int(r.random() < 0.4),
        300,
    ),
    "confidence": Case(
        ConfidenceDetector,
        lambda r: _clip(r.gauss(0.9, 0.08)),
        lambda r: _clip(r.gauss(0.6, 0.15)),
        150,
    ),
    "label_mix": Case(
        LabelMixDetector,
        lambda r: r.choice(LABELS),
        lambda r: "business" if r.random() < 0.6 else r.choice(LABELS),
        250,
    ),
}

ids = list(CASES)


@pytest.fixture(params=ids)
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


def test_implements_protocol(case: Case) -> None:
    detector = case.make()
    assert isinstance(detector, DriftDetector)
    assert isinstance(detector.name, str) and detector.name


def test_quiet_on_stationary_stream(case: Case) -> None:
    rng = random.Random(1)
    detector = case.make()
    alarms = sum(detector.update(case.before(rng)) for _ in range(5000))
    assert alarms == 0
    assert detector.n_seen == 5000


def test_detects_shift(case: Case) -> None:
    rng = random.Random(2)
    detector = case.make()
    for _ in range(1000):
        detector.update(case.before(rng))
    delay = next((i for i in range(1, 2000) if detector.update(case.after(rng))), None)
    assert delay is not None, "no alarm after the shift"
    assert delay <= case.max_delay


def test_state_round_trip_continues_identically(case: Case) -> None:
    rng = random.Random(3)
    stream = [case.before(rng) for _ in range(700)] + [case.after(rng) for _ in range(700)]
    original = case.make()
    for x in stream[:800]:
        original.update(x)
    state = json.loads(json.dumps(original.state_dict()))  # must survive a JSON checkpoint
    restored = case.make()
    restored.load_state(state)
    assert restored.n_seen == original.n_seen == 800
    tail_a = [original.update(x) for x in stream[800:]]
    tail_b = [restored.update(x) for x in stream[800:]]
    assert tail_a == tail_b
    assert restored.statistic == pytest.approx(original.statistic)


def test_rejects_foreign_state(case: Case) -> None:
    foreign = ConfidenceDetector() if case.make().name != "confidence" else LabelMixDetector()
    with pytest.raises(StateMismatchError):
        case.make().load_state(foreign.state_dict())


def test_reset_forgets_the_window(case: Case) -> None:
    rng = random.Random(4)
    detector = case.make()
    for _ in range(500):
        detector.update(case.before(rng))
    detector.reset()
    assert detector.window == 0


def test_error_rate_ignores_improvement() -> None:
    rng = random.Random(5)
    detector = ErrorRateDetector()
    for _ in range(1000):
        detector.update(int(rng.random() < 0.4))
    alarms = sum(detector.update(int(rng.random() < 0.02)) for _ in range(1000))
    assert alarms == 0
    assert detector.statistic < 0.1


@pytest.mark.parametrize(("detector", "bad"), [(ErrorRateDetector(), 0.5), (ConfidenceDetector(), 1.5)])
def test_bad_input_is_a_clear_error(detector: DriftDetector, bad: float) -> None:
    with pytest.raises(ValueError):
        detector.update(bad)
