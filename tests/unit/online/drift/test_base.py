"""Conformance tests every DriftDetector must pass (River style: one suite, all detectors)."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from driftline.online.drift import (
    ConfidenceDetector,
    DriftDetector,
    ErrorRateDetector,
    LabelMixDetector,
    UnlearnedClassDetector,
)
from driftline.online.drift.base import StateMismatchError
from tests.support.crafted_state import CRAFTED, pickle_payload


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
    # feedback (true label, served prediction right?): a class the model cannot name starts arriving
    "unlearned_class": Case(
        UnlearnedClassDetector,
        lambda r: (r.choice(LABELS), r.random() < 0.8),
        lambda r: ("entertainment", False) if r.random() < 0.2 else (r.choice(LABELS), r.random() < 0.8),
        80,
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


def _trace(detector: DriftDetector, x: Any) -> tuple[bool, float, int, int]:
    """What one update shows from outside: the flag, the statistic, the window and the count."""
    return detector.update(x), detector.statistic, detector.window, detector.n_seen


def _restored(case: Case, detector: DriftDetector) -> DriftDetector:
    state = json.loads(json.dumps(detector.state_dict(), allow_nan=False))  # a strict JSON checkpoint
    restored = case.make()
    restored.load_state(state)
    return restored


def test_state_round_trip_continues_identically(case: Case) -> None:
    rng = random.Random(3)
    stream = [case.before(rng) for _ in range(700)] + [case.after(rng) for _ in range(700)]
    original = case.make()
    for x in stream[:705]:  # restored 5 events into the shifted regime: the alarm comes after
        original.update(x)
    restored = _restored(case, original)
    assert restored.n_seen == original.n_seen == 705
    assert restored.state_dict() == original.state_dict()
    tail_a = [_trace(original, x) for x in stream[705:]]
    tail_b = [_trace(restored, x) for x in stream[705:]]
    assert tail_a == tail_b
    assert any(flag for flag, *_ in tail_a), "the continuation should cross the shift's alarm"
    assert restored.state_dict() == original.state_dict()


def test_checkpoint_chain_matches_uninterrupted_run(case: Case) -> None:
    """Restored every 37 events and right after every alarm, a detector behaves as one never restarted."""
    rng = random.Random(6)
    stream = [case.before(rng) for _ in range(900)] + [case.after(rng) for _ in range(900)]
    steady, restarted = case.make(), case.make()
    alarms = 0
    for i, x in enumerate(stream):
        seen = _trace(steady, x)
        assert _trace(restarted, x) == seen, f"diverged at event {i}"
        alarms += seen[0]
        if seen[0] or i % 37 == 0:
            restarted = _restored(case, restarted)
    assert alarms >= 1
    assert restarted.state_dict() == steady.state_dict()


def _plain_json(value: Any) -> bool:
    """Only JSON objects with string keys, arrays, strings, booleans, null and finite numbers."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_json(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)


def test_state_is_plain_json_data(case: Case) -> None:
    rng = random.Random(7)
    detector = case.make()
    assert _plain_json(detector.state_dict())
    for _ in range(800):
        detector.update(case.before(rng))
    state = detector.state_dict()
    assert _plain_json(state)
    assert json.loads(json.dumps(state, allow_nan=False)) == state


@pytest.mark.parametrize("crafted", sorted(CRAFTED))
def test_refuses_crafted_state_and_runs_nothing(case: Case, crafted: str, tmp_path: Path) -> None:
    marker = tmp_path / "created-by-the-checkpoint"
    rng = random.Random(8)
    detector = case.make()
    for _ in range(300):
        detector.update(case.before(rng))
    before = detector.state_dict()
    with pytest.raises(StateMismatchError):
        detector.load_state(CRAFTED[crafted](json.loads(json.dumps(before)), pickle_payload(marker)))
    assert not marker.exists(), "loading the checkpoint ran the pickled payload"
    assert detector.state_dict() == before, "a refused checkpoint must leave the detector as it was"


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


@pytest.mark.parametrize(
    ("detector", "bad"),
    [
        (ErrorRateDetector(), 0.5),
        (ConfidenceDetector(), 1.5),
        (UnlearnedClassDetector(), 0.5),
        (UnlearnedClassDetector(), ("sport", "yes")),
        (UnlearnedClassDetector(), (3, False)),
    ],
)
def test_bad_input_is_a_clear_error(detector: DriftDetector, bad: Any) -> None:
    with pytest.raises(ValueError):
        detector.update(bad)
