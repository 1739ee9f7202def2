"""The checkpoint format every drift detector shares: plain data in, validated data out.

``StateModel`` validates exact types and bounds, ``DetectorState`` is the common header, and
``StateMismatchError`` makes a caller start that detector fresh.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

#: Version of the checkpoint layout. Version 1 held pickled River objects; it is refused, never loaded.
STATE_VERSION = 2

#: Largest observation count a checkpoint may carry (exact as a float, far beyond any real stream).
MAX_COUNT = 2**53
#: Longest string (a label, a parameter value, a model version) a checkpoint may carry.
MAX_TEXT = 256
#: Most parameters a detector checkpoint may list.
MAX_PARAMS = 32

Count = Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)]
Text = Annotated[StrictStr, Field(max_length=MAX_TEXT)]
ParamValue = Text | StrictInt | StrictFloat | StrictBool


class StateMismatchError(ValueError):
    """A checkpoint ``load_state`` cannot resume from.

    It was written by another detector, task, format version or configuration, or it is not valid
    state at all (wrong types, non-finite numbers, oversized lists, inconsistent fields).
    """


class StateModel(BaseModel):
    """Base of every checkpoint model: unknown fields, NaN and infinities are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class DetectorState(StateModel):
    """The header every detector checkpoint starts with; detectors add their own fields."""

    format: StrictInt
    name: Text
    n_seen: Count
    params: Annotated[dict[Text, ParamValue], Field(max_length=MAX_PARAMS)]


def header(name: str, n_seen: int, params: Mapping[str, ParamValue]) -> dict[str, Any]:
    """The fields every detector checkpoint starts with (``DetectorState``), as ``state_dict`` writes them."""
    return {"format": STATE_VERSION, "name": name, "n_seen": n_seen, "params": dict(params)}


S = TypeVar("S", bound=StateModel)
D = TypeVar("D", bound=DetectorState)


def validated(model: type[S], state: Any, what: str) -> S:
    """``state`` parsed by ``model``; ``StateMismatchError`` naming ``what`` and the first problems."""
    try:
        return model.model_validate(state)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(top)'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)[:5]
        )
        count = exc.error_count()
        raise StateMismatchError(
            f"{what} checkpoint rejected ({count} problem{'s' * (count != 1)}): {problems}"
        ) from None


def check_header(state: Any, name_field: str, expected: str, what: str) -> Mapping[str, Any]:
    """``state`` as a mapping after checking its ``format`` and ``name_field``; else ``StateMismatchError``.

    Done before the full validation so that a checkpoint of an old format or of another detector
    or task gets a reason that says so.
    """
    if not isinstance(state, Mapping):
        raise StateMismatchError(f"{what} checkpoint is a {type(state).__name__}, not a JSON object")
    found = state.get("format")
    is_int = type(found) is int  # not bool, not float
    if not is_int or found != STATE_VERSION:
        why = " (format 1 stored pickled objects, which are never loaded)" if is_int and found == 1 else ""
        raise StateMismatchError(
            f"{what} checkpoint has format {reprlib.repr(found)}, not {STATE_VERSION}{why}"
        )
    if state.get(name_field) != expected:
        owner = reprlib.repr(state.get(name_field))
        raise StateMismatchError(f"checkpoint is for {name_field} {owner}, not {expected!r}")
    return state


def parse_state(model: type[D], state: Any, name: str, params: Mapping[str, Any]) -> D:
    """Validate a detector checkpoint: header, then ``model``, then that ``params`` are the same.

    ``name`` and ``params`` describe the detector the state is offered to; a checkpoint written
    with other parameters describes another window (another ADWIN delta, label-mix window size)
    and is refused.
    """
    check_header(state, "name", name, name)
    parsed = validated(model, state, name)
    if dict(parsed.params) != dict(params):
        raise StateMismatchError(
            f"{name} checkpoint was written with {parsed.params}, this detector runs {params}"
        )
    return parsed
