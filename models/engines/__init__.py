"""Inference engines of a served classifier version, and the measurement that picks one.

A version folder (``triton_repo/<model>/<n>/``) holds the trained artifact; :func:`write_onnx` adds
the merged classifier as ONNX graphs (plain fp32 ``model.onnx``, the contract Triton's onnxruntime
backend serves, plus int8 and transformer-fused variants), :func:`load_engine` runs any of them behind
one :class:`Engine` protocol (token tensors in, probabilities out), and :func:`choose_engine` /
:func:`prepare_engines` measure every engine against torch on held-out texts and record the fastest
one that keeps torch's accuracy in the version's ``meta.json``.
"""

from driftline.models.engines.base import (
    ENGINE_NAMES,
    REFERENCE_ENGINE,
    Engine,
    EngineUnavailableError,
    UnknownEngineError,
    load_engine,
)
from driftline.models.engines.batching import TokenBatch, token_batches
from driftline.models.engines.onnx_export import write_onnx
from driftline.models.engines.prepare import held_out_examples, prepare_engines, prune_graphs
from driftline.models.engines.select import EngineChoice, EngineMeasure, choose_engine, pick_engine

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
