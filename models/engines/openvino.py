"""``openvino-*``: an ONNX graph of the version compiled by OpenVINO for the CPU.

Precision is pinned to f32 so the engine name says what runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov

from driftline.models.engines.base import ATTENTION_MASK, INPUT_IDS, PROBS


class OpenVinoEngine:
    """One compiled OpenVINO model over ``graph`` and its infer request."""

    def __init__(self, name: str, graph: Path, num_threads: int = 0) -> None:
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": "f32"}
        if num_threads > 0:
            config["INFERENCE_NUM_THREADS"] = num_threads
        compiled = ov.Core().compile_model(str(graph), "CPU", config)
        self.name = name
        self.request = compiled.create_infer_request()
        self.output = compiled.output(PROBS)

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """``PROBS`` of the graph, float32 ``[batch, n_labels]`` (copied out of the request's buffer)."""
        feeds = {
            INPUT_IDS: np.asarray(input_ids, dtype=np.int64),
            ATTENTION_MASK: np.asarray(attention_mask, dtype=np.int64),
        }
        return np.array(self.request.infer(feeds)[self.output], dtype=np.float32, copy=True)
