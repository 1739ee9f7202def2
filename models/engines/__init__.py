"""Inference engines of a served classifier version, and the measurement that picks one.

A version folder (``triton_repo/<model>/<n>/``) holds the trained artifact; :func:`write_onnx` adds
the merged classifier as ONNX graphs (plain fp32 ``model.onnx``, the contract Triton's onnxruntime
backend serves, plus int8 and transformer-fused variants), :func:`load_engine` runs any of them behind
one :class:`Engine` protocol (token tensors in, probabilities out), and :func:`choose_engine` /
:func:`prepare_engines` measure every engine against torch on held-out texts and record the fastest
one that keeps torch's accuracy in the version's ``meta.json``.

Importing this package is cheap: each name is loaded from its module on first use (PEP 562), so a
Triton python stub that only needs :func:`load_engine` for an onnxruntime version never imports torch,
transformers or peft (seconds of every model load on a busy CPU).
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
    "TokenBatch": "batching",
    "token_batches": "batching",
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
    from driftline.models.text.batching import TokenBatch, token_batches


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
    "TokenBatch",
    "UnknownEngineError",
    "choose_engine",
    "held_out_examples",
    "load_engine",
    "pick_engine",
    "prepare_engines",
    "prune_graphs",
    "token_batches",
    "write_onnx",
]
