"""Inference engines of a served classifier version, and the measurement that picks one.

:func:`write_onnx`, :func:`load_engine`, :func:`choose_engine`, :func:`prepare_engines`; names load lazily
(PEP 562) so a Triton stub serving onnxruntime never imports torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_SOURCES = {
    "ENGINE_NAMES": "base",
    "REFERENCE_ENGINE": "base",
    "Engine": "base",
    "EngineUnavailableError": "base",
    "UnknownEngineError": "base",
    "load_engine": "base",
    "write_onnx": "onnx_export",
    "held_out_examples": "prepare",
    "prepare_engines": "prepare",
    "prune_graphs": "prepare",
    "EngineChoice": "select",
    "EngineMeasure": "select",
    "choose_engine": "select",
    "pick_engine": "select",
}

if TYPE_CHECKING:
    from driftline.models.engines.base import (
        ENGINE_NAMES,
        REFERENCE_ENGINE,
        Engine,
        EngineUnavailableError,
        UnknownEngineError,
        load_engine,
    )
    from driftline.models.engines.onnx_export import write_onnx
    from driftline.models.engines.prepare import held_out_examples, prepare_engines, prune_graphs
    from driftline.models.engines.select import EngineChoice, EngineMeasure, choose_engine, pick_engine


def __getattr__(name: str) -> Any:
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ENGINE_NAMES",
    "REFERENCE_ENGINE",
    "Engine",
    "EngineChoice",
    "EngineMeasure",
    "EngineUnavailableError",
    "UnknownEngineError",
    "choose_engine",
    "held_out_examples",
    "load_engine",
    "pick_engine",
    "prepare_engines",
    "prune_graphs",
    "write_onnx",
]
