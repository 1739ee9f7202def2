"""The state of River's drift objects (ADWIN, DDM, Page-Hinkley) as validated plain data, and back.

Checkpoints come from a Kafka changelog anyone with access can write, so they are read only through pydantic
models into River objects this process built; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, StrictBool, StrictFloat, StrictInt, model_validator
from river import drift
from river.drift.adwin_c import Bucket
from river.stats import Mean

from driftline.online.drift.state import StateMismatchError, StateModel

Finite = StrictFloat  # StateModel rejects NaN and infinities
CInt = Annotated[StrictInt, Field(ge=-(2**31), le=2**31 - 1)]  # the Cython helper's counters are C ints

#: Row ``i`` of ADWIN's histogram has buckets of 2**i observations: 64 rows are beyond any stream.
MAX_ADWIN_ROWS = 64
#: A bucket row holds at most ``max_buckets + 1`` entries; River's default ``max_buckets`` is 5.
MAX_ADWIN_ROW_ENTRIES = 64

#: The Cython helper's fields, in the (sorted) order ``__reduce_cython__`` lists them.
_ADWIN_FIELDS = (
    "clock",
    "delta",
    "detect",
    "detect_twice",
    "grace_period",
    "max_buckets",
    "max_n_buckets",
    "min_window_length",
    "n_buckets",
    "n_detections",
    "tick",
    "total",
    "total_width",
    "variance",
    "width",
)
#: Fields that come from the detector's configuration, not from a checkpoint.
_ADWIN_CONFIG_FIELDS = frozenset({"clock", "delta", "grace_period", "max_buckets", "min_window_length"})
_BUCKET_FIELDS = ("current_idx", "max_size", "total_array", "variance_array")


class MeanState(StateModel):
    """``river.stats.Mean``: the weight seen and the running mean."""

    n: Annotated[StrictFloat, Field(ge=0)]
    mean: Finite


class PageHinkleyState(StateModel):
    """``river.drift.PageHinkley`` without its parameters (those come from the configuration)."""

    kind: Literal["page_hinkley"]
    drift_detected: StrictBool
    x_mean: MeanState
    sum_increase: Finite
    sum_decrease: Finite
    min_increase: Finite | None  # None: nothing seen since the last reset (River starts it at +inf)
    max_decrease: Finite


class DdmState(StateModel):
    """``river.drift.binary.DDM`` without its parameters."""

    kind: Literal["ddm"]
    drift_detected: StrictBool
    warning_detected: StrictBool
    p: MeanState
    p_min: Finite | None  # None: the warm start has not ended since the last reset
    s_min: Finite | None
    ps_min: Finite | None  # None: River's +inf, until p_min and s_min are set

    @model_validator(mode="after")
    def _minimums_set_together(self) -> DdmState:
        if len({self.p_min is None, self.s_min is None, self.ps_min is None}) != 1:
            raise ValueError("p_min, s_min and ps_min are either all set or all null")
        return self


class AdwinRow(StateModel):
    """One row of ADWIN's exponential histogram: the totals and variances of its buckets."""

    total: Annotated[list[Finite], Field(max_length=MAX_ADWIN_ROW_ENTRIES)]
    variance: Annotated[list[Finite], Field(max_length=MAX_ADWIN_ROW_ENTRIES)]

    @model_validator(mode="after")
    def _same_length(self) -> AdwinRow:
        if len(self.total) != len(self.variance):
            raise ValueError("a bucket row needs as many variances as totals")
        return self


class AdwinState(StateModel):
    """``river.drift.ADWIN`` and its Cython window, without the parameters."""

    kind: Literal["adwin"]
    drift_detected: StrictBool
    detect: CInt
    detect_twice: CInt
    max_n_buckets: CInt
    n_buckets: CInt
    n_detections: CInt
    tick: CInt
    total: Finite
    total_width: Finite
    variance: Finite
    width: Annotated[StrictFloat, Field(ge=0)]
    rows: Annotated[list[AdwinRow], Field(min_length=1, max_length=MAX_ADWIN_ROWS)]

    @model_validator(mode="after")
    def _width_matches_rows(self) -> AdwinState:
        held = sum(len(row.total) * 2**i for i, row in enumerate(self.rows))
        if held != self.width:
            raise ValueError(f"width {self.width} but the bucket rows hold {held} observations")
        return self


RiverState = Annotated[PageHinkleyState | DdmState | AdwinState, Field(discriminator="kind")]


def _cython_fields(obj: Any, names: tuple[str, ...]) -> tuple[Any, ...]:
    """Field values of a Cython object in ``names`` order, after checking River's layout is ``names``."""
    reduced = obj.__reduce_cython__()
    args = reduced[1]
    values = args[2] if len(args) > 2 and args[2] is not None else reduced[2]
    joined = " ".join(names).encode()
    known = {int(hashlib.new(alg, joined).hexdigest()[:7], 16) for alg in ("sha256", "sha1", "md5")}
    if args[1] not in known or len(values) < len(names):
        raise StateMismatchError(
            f"the installed River's {type(obj).__name__} does not have the fields {names}; "
            "its state can be neither saved nor restored by this version of driftline"
        )
    return tuple(values)


def _dump_mean(mean: Mean) -> dict[str, Any]:
    return {"n": float(mean.n), "mean": float(mean._mean)}


def _load_mean(state: MeanState) -> Mean:
    mean = Mean()
    mean.n, mean._mean = state.n, state.mean
    return mean


def _none_if_inf(x: float | None) -> float | None:
    return None if x is None or x == float("inf") else float(x)


def _dump_adwin(adwin: drift.ADWIN) -> dict[str, Any]:
    values = _cython_fields(adwin._helper, _ADWIN_FIELDS)
    fields = dict(zip(_ADWIN_FIELDS, values, strict=False))
    rows = []
    for bucket in values[len(_ADWIN_FIELDS)]["bucket_deque"]:
        used, _, totals, variances = _cython_fields(bucket, _BUCKET_FIELDS)
        rows.append(
            {"total": [float(x) for x in totals[:used]], "variance": [float(x) for x in variances[:used]]}
        )
    dynamic = {name: value for name, value in fields.items() if name not in _ADWIN_CONFIG_FIELDS}
    for name in ("total", "total_width", "variance", "width"):
        dynamic[name] = float(dynamic[name])
    return {"kind": "adwin", "drift_detected": bool(adwin._drift_detected), **dynamic, "rows": rows}


def _load_adwin(adwin: drift.ADWIN, state: AdwinState) -> None:
    helper = adwin._helper
    configured = dict(zip(_ADWIN_FIELDS, _cython_fields(helper, _ADWIN_FIELDS), strict=False))
    max_buckets = int(configured["max_buckets"])
    capacity = max_buckets + 1  # River's bucket arrays hold one more entry than max_buckets
    if any(len(row.total) > capacity for row in state.rows):
        raise StateMismatchError(f"an ADWIN bucket row holds more than {capacity} buckets")
    buckets: deque[Bucket] = deque()
    for row in state.rows:
        totals, variances = np.zeros(capacity, dtype=float), np.zeros(capacity, dtype=float)
        totals[: len(row.total)], variances[: len(row.variance)] = row.total, row.variance
        bucket = Bucket(max_buckets)
        bucket.__setstate_cython__((len(row.total), max_buckets, totals, variances))
        buckets.append(bucket)
    saved = state.model_dump(exclude={"kind", "drift_detected", "rows"})
    values = [configured[name] if name in _ADWIN_CONFIG_FIELDS else saved[name] for name in _ADWIN_FIELDS]
    helper.__setstate_cython__((*values, {"bucket_deque": buckets}))
    adwin._drift_detected = state.drift_detected


def dump_river(detector: Any) -> dict[str, Any]:
    """The changing state of a River ADWIN, DDM or PageHinkley as JSON-ready data (no parameters)."""
    if isinstance(detector, drift.ADWIN):
        return _dump_adwin(detector)
    if isinstance(detector, drift.binary.DDM):
        return {
            "kind": "ddm",
            "drift_detected": bool(detector._drift_detected),
            "warning_detected": bool(detector._warning_detected),
            "p": _dump_mean(detector._p),
            "p_min": None if detector._p_min is None else float(detector._p_min),
            "s_min": None if detector._s_min is None else float(detector._s_min),
            "ps_min": _none_if_inf(detector._ps_min),
        }
    if isinstance(detector, drift.PageHinkley):
        return {
            "kind": "page_hinkley",
            "drift_detected": bool(detector._drift_detected),
            "x_mean": _dump_mean(detector._x_mean),
            "sum_increase": float(detector._sum_increase),
            "sum_decrease": float(detector._sum_decrease),
            "min_increase": _none_if_inf(detector._min_increase),
            "max_decrease": float(detector._max_decrease),
        }
    raise TypeError(f"no state codec for {type(detector).__name__}")


def load_river(fresh: Any, state: PageHinkleyState | DdmState | AdwinState) -> Any:
    """Fill ``fresh`` (a River detector built from this process's configuration) with ``state``.

    Raises ``StateMismatchError`` when ``state`` is of another kind of detector than ``fresh``.
    """
    kinds = {"adwin": drift.ADWIN, "ddm": drift.binary.DDM, "page_hinkley": drift.PageHinkley}
    if not isinstance(fresh, kinds[state.kind]):
        raise StateMismatchError(
            f"checkpoint holds a {state.kind} state, this detector runs {type(fresh).__name__}"
        )
    if isinstance(state, AdwinState):
        _load_adwin(fresh, state)
    elif isinstance(state, DdmState):
        fresh._drift_detected, fresh._warning_detected = state.drift_detected, state.warning_detected
        fresh._p = _load_mean(state.p)
        fresh._p_min, fresh._s_min = state.p_min, state.s_min
        fresh._ps_min = float("inf") if state.ps_min is None else state.ps_min
    else:
        fresh._drift_detected = state.drift_detected
        fresh._x_mean = _load_mean(state.x_mean)
        fresh._sum_increase, fresh._sum_decrease = state.sum_increase, state.sum_decrease
        fresh._min_increase = float("inf") if state.min_increase is None else state.min_increase
        fresh._max_decrease = state.max_decrease
    return fresh
