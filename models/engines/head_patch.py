"""A head refit's graphs without tracing: the parent's graphs with the new head's weights swapped in.

A refit changes only the head, so swapping its initializers (about a second per graph) replaces a full
re-export; an unrecognised layout raises :class:`HeadPatchError` and the caller exports from scratch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from driftline.models.artifacts import HEAD_FILE
from driftline.models.engines.onnx_export import check_contract, save_graph

INT8_MAX = 127


class HeadPatchError(ValueError):
    """The parent's graph cannot take the new head by an initializer swap; export from scratch."""


def read_head(version_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The version's head as ``(weight [labels, hidden], bias [labels])`` float32 arrays."""
    from safetensors.numpy import load_file

    tensors = load_file(Path(version_dir) / HEAD_FILE)
    if set(tensors) != {"weight", "bias"}:
        raise HeadPatchError(f"{HEAD_FILE} holds {sorted(tensors)}, not one linear layer")
    return tensors["weight"].astype(np.float32), tensors["bias"].astype(np.float32)


def quantize_columns(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per column, as ``quantize_dynamic`` does a weight: ``(q int8, scale per column)``."""
    absmax = np.abs(matrix).max(axis=0)
    scale = np.where(absmax > 0, absmax / INT8_MAX, 1.0).astype(np.float32)
    q = np.clip(np.rint(matrix / scale), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, scale


def _one(initializers: dict[str, onnx.TensorProto], suffix: str) -> onnx.TensorProto | None:
    found = [t for name, t in initializers.items() if name.endswith(suffix)]
    if len(found) > 1:
        raise HeadPatchError(f"{len(found)} initializers end in {suffix!r}")
    return found[0] if found else None


def _replace(tensor: onnx.TensorProto, value: np.ndarray) -> None:
    old = numpy_helper.to_array(tensor)
    if old.shape != value.shape or old.dtype != value.dtype:
        have, want = f"{old.dtype}{list(old.shape)}", f"{value.dtype}{list(value.shape)}"
        raise HeadPatchError(f"{tensor.name}: the parent's {have} cannot take {want}")
    tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))


def swap_head(model: onnx.ModelProto, weight: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """Put ``weight``/``bias`` in place of ``model``'s head (in place); returns ``model``."""
    initializers = {t.name: t for t in model.graph.initializer}
    bias_tensor = _one(initializers, "head.bias")
    layouts = {
        "gemm": _one(initializers, "head.weight"),
        "matmul": _one(initializers, "head.weight_Transposed"),
        "int8": _one(initializers, "head.weight_Transposed_quantized"),
    }
    found = {layout: tensor for layout, tensor in layouts.items() if tensor is not None}
    if bias_tensor is None or len(found) != 1:
        raise HeadPatchError(f"the graph has no single recognisable head (found {sorted(found) or 'none'})")
    ((layout, tensor),) = found.items()
    if layout == "gemm":
        _replace(tensor, weight)
    elif layout == "matmul":
        _replace(tensor, np.ascontiguousarray(weight.T))
    else:
        stem = tensor.name.removesuffix("_quantized")
        scale, zero = initializers.get(f"{stem}_scale"), initializers.get(f"{stem}_zero_point")
        if scale is None or zero is None or np.any(numpy_helper.to_array(zero)):
            raise HeadPatchError(f"{tensor.name}: not symmetric per-channel int8 (zero points 0)")
        q, s = quantize_columns(weight.T)
        _replace(tensor, q)
        _replace(scale, s.reshape(numpy_helper.to_array(scale).shape))
    _replace(bias_tensor, bias)
    return model


def patch_graph(source: Path, target: Path, weight: np.ndarray, bias: np.ndarray) -> Path:
    """Write ``source`` with the head ``weight``/``bias`` to ``target`` (atomically); returns ``target``."""
    model = swap_head(onnx.load(str(source)), weight, bias)
    try:
        check_contract(model, len(bias))
    except ValueError as exc:
        raise HeadPatchError(str(exc)) from exc
    return save_graph(model, target)
