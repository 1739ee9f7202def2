"""Echo: the stack's smoke model. Returns each TEXT unchanged (ECHO) and its UTF-8 length (LENGTH).

It also imports ``driftline.settings`` to prove the server's PYTHONPATH reaches the repo, which the
real classifiers rely on (their model.py imports ``models``).
"""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

import driftline.settings  # noqa: F401  (import check: repo root is on PYTHONPATH)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.ready = True

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            lengths = np.array([[len(bytes(v[0]))] for v in text], dtype=np.int32)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("ECHO", text.astype(np.object_)),
                        pb_utils.Tensor("LENGTH", lengths),
                    ]
                )
            )
        return responses
