"""The engine protocol, the engine names, the graph files they read, and ``load_engine``.

An engine maps ``INPUT_IDS``/``ATTENTION_MASK`` to ``PROBS``; names are ``<library>-<graph>`` (``torch-fp32``,
``ort-*``, ``openvino-*``), and each library is imported only when one of its engines loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, get_args, runtime_checkable

import numpy as np

from driftline.settings import EngineSetting

INPUT_IDS = "INPUT_IDS"
ATTENTION_MASK = "ATTENTION_MASK"
PROBS = "PROBS"

AUTO = "auto"
ENGINE_NAMES: tuple[str, ...] = tuple(name for name in get_args(EngineSetting) if name != AUTO)
REFERENCE_ENGINE = "torch-fp32"

#: graph -> file in the version folder; ``model.onnx`` is what Triton's onnxruntime backend loads
GRAPH_FILES = {
    "fp32": "model.onnx",
    "int8": "model-int8.onnx",
    "fused-fp32": "model-fused.onnx",
    "fused-int8": "model-fused-int8.onnx",
}


class UnknownEngineError(KeyError):
    """Raised for an engine name that is not one of :data:`ENGINE_NAMES`."""


class EngineUnavailableError(RuntimeError):
    """Raised when an engine cannot run this version (graph not written, library refused it)."""


@runtime_checkable
class Engine(Protocol):
    """Runs a classifier version: token tensors in, class probabilities out."""

    name: str

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Softmax probabilities, float32 ``[batch, n_labels]``, for int64 ``[batch, seq]`` inputs."""
        ...


def split_name(name: str) -> tuple[str, str]:
    """``ort-fused-int8`` -> ``("ort", "fused-int8")``; ``UnknownEngineError`` for other names."""
    if name not in ENGINE_NAMES:
        raise UnknownEngineError(f"unknown engine {name!r}; engines: {', '.join(ENGINE_NAMES)}")
    library, graph = name.split("-", 1)
    return library, graph


def graphs_read_by(name: str) -> set[str]:
    """The graphs engine ``name`` loads (none for torch)."""
    library, graph = split_name(name)
    return set() if library == "torch" else {graph}


def graph_path(version_dir: Path, graph: str) -> Path:
    """The ONNX file of ``graph`` in ``version_dir``; ``EngineUnavailableError`` when it is missing."""
    path = Path(version_dir) / GRAPH_FILES[graph]
    if not path.is_file():
        raise EngineUnavailableError(f"{path} does not exist (write_onnx did not produce the {graph} graph)")
    return path


def load_engine(version_dir: Path, name: str, num_threads: int = 0) -> Engine:
    """Engine ``name`` over the version in ``version_dir``; ``num_threads`` 0 = the library's default.

    torch's thread count is process-wide (``torch.set_num_threads``); onnxruntime and OpenVINO set it
    per session.
    """
    library, graph = split_name(name)
    if library == "torch":
        from driftline.models.engines.torch_engine import TorchEngine

        return TorchEngine(Path(version_dir), num_threads)
    path = graph_path(Path(version_dir), graph)
    if library == "ort":
        from driftline.models.engines.ort import OrtEngine

        return OrtEngine(name, path, num_threads)
    from driftline.models.engines.openvino import OpenVinoEngine

    return OpenVinoEngine(name, path, num_threads)
