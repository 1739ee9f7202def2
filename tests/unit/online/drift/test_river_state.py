"""Detector checkpoints are validated data (``driftline.online.drift.state`` and ``river_state``).

The shared conformance suite (test_base.py) checks every detector's round trip and the
crafted checkpoints any detector must refuse; this file adds what is specific to each detector's
state (ADWIN's bucket rows, DDM's minimums, the label windows), checks that ADWIN's Cython window
comes back bit for bit, and that no detector code can unpickle.
"""

from __future__ import annotations

import ast
import base64
import json
import pickle
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftline.online.drift import ConfidenceDetector, ErrorRateDetector, LabelMixDetector, StateMismatchError
from driftline.online.drift.base import STATE_VERSION, DriftDetector
from driftline.online.drift.river_state import _ADWIN_FIELDS, _BUCKET_FIELDS, _cython_fields
from tests.support.crafted_state import pickle_payload

ROOT = Path(__file__).resolve().parents[4]
LABELS = ["business", "politics", "sport", "tech"]


def _fed(make: Callable[[], DriftDetector], values: Callable[[random.Random], Any], n: int) -> DriftDetector:
    rng = random.Random(11)
    detector = make()
    for _ in range(n):
        detector.update(values(rng))
    return detector


def _adwin() -> DriftDetector:
    return _fed(ErrorRateDetector, lambda r: int(r.random() < 0.1 + 0.3 * (r.random() < 0.2)), 3000)


def _ddm() -> DriftDetector:
    return _fed(lambda: ErrorRateDetector(method="ddm"), lambda r: int(r.random() < 0.1), 500)


def _confidence() -> DriftDetector:
    return _fed(ConfidenceDetector, lambda r: min(1.0, max(0.0, r.gauss(0.9, 0.05))), 500)


def _label_mix() -> DriftDetector:
    return _fed(LabelMixDetector, lambda r: r.choice(LABELS), 600)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A change that sets the dotted ``path`` (list indices as numbers) of a state to ``value``."""

    def change(state: dict[str, Any]) -> dict[str, Any]:
        *parents, last = path.split(".")
        node: Any = state
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
        return state

    return change


def _over_capacity(state: dict[str, Any]) -> dict[str, Any]:
    """Row 0 with one bucket more than River's arrays hold, the width made to match."""
    river = state["river"]
    river["width"] += 7 - len(river["rows"][0]["total"])
    river["rows"][0] = {"total": [1.0] * 7, "variance": [0.0] * 7}
    return state


SPECIFIC: dict[str, tuple[Callable[[], DriftDetector], Callable[[dict[str, Any]], Any]]] = {
    "adwin_total_nan": (_adwin, _set("river.total", float("nan"))),
    "adwin_variance_inf": (_adwin, _set("river.variance", float("inf"))),
    "adwin_bucket_total_nan": (_adwin, _set("river.rows.0.total.0", float("nan"))),
    "adwin_bucket_total_string": (_adwin, _set("river.rows.0.total.0", "1.0")),
    "adwin_width_not_the_rows": (_adwin, lambda s: _set("river.width", s["river"]["width"] + 1)(s)),
    "adwin_no_rows": (_adwin, _set("river.rows", [])),
    "adwin_rows_huge": (_adwin, _set("river.rows", [{"total": [], "variance": []}] * 100_000)),
    "adwin_row_huge": (_adwin, _set("river.rows.0", {"total": [1.0] * 100_000, "variance": [0.0] * 100_000})),
    "adwin_row_over_capacity": (_adwin, _over_capacity),
    "adwin_row_lengths_differ": (_adwin, _set("river.rows.0.variance", [])),
    "adwin_tick_past_c_int": (_adwin, _set("river.tick", 2**31)),
    "adwin_flag_as_string": (_adwin, _set("river.drift_detected", "true")),
    "adwin_kind_unknown": (_adwin, _set("river.kind", "river.drift.ADWIN")),
    "adwin_offered_a_ddm_state": (_adwin, lambda s: {**s, "river": _ddm().state_dict()["river"]}),
    "adwin_river_as_pickle_string": (_adwin, _set("river", base64.b64encode(pickle.dumps(1)).decode())),
    "error_rate_last_mean_inf": (_adwin, _set("last_mean", float("-inf"))),
    "ddm_minimums_half_set": (_ddm, _set("river.p_min", None)),
    "ddm_mean_weight_negative": (_ddm, _set("river.p.n", -1.0)),
    "ddm_mean_nan": (_ddm, _set("river.p.mean", float("nan"))),
    "page_hinkley_mean_weight_string": (_confidence, _set("river.x_mean.n", "500")),
    "page_hinkley_sum_inf": (_confidence, _set("river.sum_increase", float("inf"))),
    "page_hinkley_min_as_string": (_confidence, _set("river.min_increase", "inf")),
    "page_hinkley_unknown_field": (_confidence, _set("river._test_drift", "os.system")),
    "confidence_window_negative": (_confidence, _set("window", -1)),
    "label_mix_window_huge": (_label_mix, _set("current", ["sport"] * 1_000_000)),
    "label_mix_window_over_size": (_label_mix, _set("current", ["sport"] * 201)),
    "label_mix_reference_over_size": (_label_mix, _set("reference", [["sport", 100_000]])),
    "label_mix_reference_twice": (_label_mix, _set("reference", [["sport", 2], ["sport", 3]])),
    "label_mix_reference_zero": (_label_mix, _set("reference", [["sport", 0]])),
    "label_mix_reference_triple": (_label_mix, _set("reference", [["sport", 2, 3]])),
    "label_mix_label_object": (_label_mix, _set("current.0", {"__reduce__": "os.system"})),
    "label_mix_label_list": (_label_mix, _set("current.0", ["sport"])),
    "label_mix_label_huge": (_label_mix, _set("current.0", "x" * 100_000)),
    "label_mix_since_check_huge": (_label_mix, _set("since_check", 10**9)),
    "label_mix_psi_nan": (_label_mix, _set("psi", float("nan"))),
    "label_mix_psi_negative": (_label_mix, _set("psi", -0.5)),
}


@pytest.mark.parametrize("crafted", sorted(SPECIFIC))
def test_refuses_invalid_detector_state(crafted: str) -> None:
    make, change = SPECIFIC[crafted]
    detector = make()
    before = detector.state_dict()
    with pytest.raises(StateMismatchError):
        detector.load_state(change(json.loads(json.dumps(before))))
    assert detector.state_dict() == before


def test_the_crafted_payload_is_live(tmp_path: Path) -> None:
    """The payload the refusal tests use does run when unpickled, so their passing means something."""
    marker = tmp_path / "created"
    pickle.loads(base64.b64decode(pickle_payload(marker)))
    assert marker.exists()


def test_a_pickle_in_a_label_is_only_a_string(tmp_path: Path) -> None:
    marker = tmp_path / "created"
    payload = pickle_payload(marker)
    detector = _label_mix()
    state = detector.state_dict()
    state["current"][0] = payload[:200]
    state["reference"].append([payload[:256], 1])
    state["reference"][0][1] -= 1
    detector.load_state(state)
    assert detector.state_dict()["current"][0] == payload[:200]
    assert not marker.exists()


def test_adwin_window_comes_back_bit_for_bit() -> None:
    original = _adwin()
    restored = ErrorRateDetector()
    restored.load_state(json.loads(json.dumps(original.state_dict())))

    def window(detector: Any) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
        helper = detector._detector._helper
        values = _cython_fields(helper, _ADWIN_FIELDS)
        buckets = [_cython_fields(b, _BUCKET_FIELDS) for b in values[len(_ADWIN_FIELDS)]["bucket_deque"]]
        return values[: len(_ADWIN_FIELDS)], buckets

    fields_a, buckets_a = window(original)
    fields_b, buckets_b = window(restored)
    assert fields_a == fields_b and len(buckets_a) == len(buckets_b) > 3
    for (idx_a, size_a, total_a, var_a), (idx_b, size_b, total_b, var_b) in zip(
        buckets_a, buckets_b, strict=True
    ):
        assert (idx_a, size_a) == (idx_b, size_b)
        assert np.array_equal(total_a, total_b) and np.array_equal(var_a, var_b)


def test_old_format_is_refused_with_its_reason() -> None:
    state = _adwin().state_dict()
    with pytest.raises(StateMismatchError, match="format 1 stored pickled objects"):
        ErrorRateDetector().load_state({**state, "format": 1})
    assert STATE_VERSION == 2


def test_no_unpickling_in_library_code() -> None:
    """Nothing under online/ or streams/ imports a module that turns bytes into objects."""
    forbidden = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
    found = []
    for folder in ("online", "streams"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in forbidden]
    assert found == []
