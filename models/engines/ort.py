"""``ort-*``: an ONNX graph of the version on onnxruntime's CPU execution provider.

The session applies onnxruntime's full graph optimisation at load time (its own C++ fusions on top of
whatever the graph already has) and logs only errors, so loading an engine stays quiet.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from driftline.models.engines.base import ATTENTION_MASK, INPUT_IDS, PROBS

_ERRORS_ONLY = 3  # onnxruntime log severity: 0 verbose .. 4 fatal


class OrtEngine:
    """One onnxruntime ``InferenceSession`` over ``graph``."""

    def __init__(self, name: str, graph: Path, num_threads: int = 0) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads  # 0: onnxruntime's default (one per physical core)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = _ERRORS_ONLY
        self.name = name
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """``PROBS`` of the graph, float32 ``[batch, n_labels]``."""
        feeds = {
            INPUT_IDS: np.asarray(input_ids, dtype=np.int64),
            ATTENTION_MASK: np.asarray(attention_mask, dtype=np.int64),
        }
        (probs,) = self.session.run([PROBS], feeds)
        return probs
