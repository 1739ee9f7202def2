"""Crafted drift checkpoints: what anyone able to write the drift table's changelog topic could send.

``pickle_payload(marker)`` is a real pickle (base64, as format-1 checkpoints stored River objects)
that runs ``os.system`` to create the file ``marker`` the moment it is unpickled; tests put it
where a checkpoint holds state and assert the file never appears. ``CRAFTED`` maps a name to a
change that turns a valid detector checkpoint into a hostile or broken one (shared by every
detector; detector-specific cases live with their tests).
"""

from __future__ import annotations

import base64
import os
import pickle
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

Crafter = Callable[[dict[str, Any], str], Any]


class _RunsShell:
    """Unpickling this calls ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def pickle_payload(marker: Path) -> str:
    """Base64 of a pickle whose loading creates ``marker`` (through ``os.system``)."""
    data = pickle.dumps(_RunsShell(f"touch {shlex.quote(str(marker))}"), protocol=pickle.HIGHEST_PROTOCOL)
    return base64.b64encode(data).decode("ascii")


def old_detector_state(name: str, payload: str) -> dict[str, Any]:
    """A detector checkpoint in format 1's layout with ``payload`` as the pickled River object."""
    return {"format": 1, "name": name, "n_seen": 10, "river": payload, "extra": {}}


def old_monitor_state(task: str, payload: str) -> dict[str, Any]:
    """A monitor checkpoint in format 1's layout whose River detectors hold ``payload``."""
    return {
        "format": 1,
        "task": task,
        "model_version": "1",
        "adapter_hash": "h1",
        "predictions_seen": 10,
        "feedback_seen": 10,
        "detectors": {name: old_detector_state(name, payload) for name in ("error_rate", "confidence")},
    }


def _changed_params(state: dict[str, Any]) -> dict[str, Any]:
    key = sorted(state["params"])[0]
    value = state["params"][key]
    other = value + "x" if isinstance(value, str) else value * 2 + 1
    return {**state, "params": {**state["params"], key: other}}


def _without(state: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k != key}


CRAFTED: dict[str, Crafter] = {
    "format_1_pickle": lambda s, p: old_detector_state(s["name"], p),
    "format_1_keeps_fields": lambda s, p: {**s, "format": 1, "river": p},
    "pickle_where_state_goes": lambda s, p: {**s, **{k: p for k in s if k not in {"format", "name"}}},
    "pickle_in_an_extra_field": lambda s, p: {**s, "extra": {"_detector": p}},
    "attribute_name_field": lambda s, p: {**s, "__class__": "os.system", "_detector": p},
    "whole_state_is_a_pickle": lambda s, p: p,
    "list_not_object": lambda s, p: [s],
    "null": lambda s, p: None,
    "format_as_string": lambda s, p: {**s, "format": "2"},
    "n_seen_string": lambda s, p: {**s, "n_seen": str(s["n_seen"])},
    "n_seen_bool": lambda s, p: {**s, "n_seen": True},
    "n_seen_negative": lambda s, p: {**s, "n_seen": -1},
    "n_seen_huge": lambda s, p: {**s, "n_seen": 10**40},
    "n_seen_nan": lambda s, p: {**s, "n_seen": float("nan")},
    "n_seen_missing": lambda s, p: _without(s, "n_seen"),
    "params_changed": lambda s, p: _changed_params(s),
    "params_huge": lambda s, p: {**s, "params": {f"k{i}": i for i in range(100_000)}},
    "params_nested": lambda s, p: {**s, "params": {**s["params"], "x": {"__reduce__": p}}},
}
