"""Triton python-backend model: a thin adapter from Triton requests to ``ClassifierRunner``.

Each exported version folder holds a two-line ``model.py`` that re-exports ``TritonPythonModel`` from
here, so a bug fix in serving reaches every exported version without re-exporting weights. The
version folder itself is the artifact (``meta.json``, ``adapter/``, ``head.safetensors``).

All requests of one dynamic batch are flattened into one runner call (one padded forward and one
backward pass), then split back per request. A failure is reported as an error on each request of
the batch instead of crashing the stub process.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PARAM_THREADS = "num_threads"
PARAM_EXPLAIN = "explain"
PARAM_LABELS = "labels"


def _param(config: dict, key: str) -> str | None:
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return value if value not in (None, "") else None


class TritonPythonModel:
    """Loads the version folder's artifact once per instance; serves TEXT -> the wire contract."""

    def initialize(self, args: dict) -> None:
        """Load this version folder's artifact and check its labels against the model config."""
        import triton_python_backend_utils as pb_utils

        from driftline.models.serving.runner import ClassifierRunner

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        device = "cpu"
        if args.get("model_instance_kind") == "GPU":
            device = f"cuda:{args.get('model_instance_device_id', 0)}"
        threads = _param(config, PARAM_THREADS)
        self.runner = ClassifierRunner(
            version_dir, device=device, num_threads=int(threads) if threads else None
        )
        self.explain = (_param(config, PARAM_EXPLAIN) or "true").lower() != "false"
        labels = _param(config, PARAM_LABELS)
        if labels is not None and json.loads(labels) != self.runner.labels:
            raise ValueError(
                f"config parameter labels {labels} does not match the artifact's labels {self.runner.labels}"
            )

    def execute(self, requests: list) -> list:
        """Classify each request's ``TEXT`` batch (Triton's entry point per batch)."""
        pb = self._pb
        counts: list[int] = []
        texts: list[str] = []
        for request in requests:
            raw = pb.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            counts.append(len(raw))
            texts.extend(
                item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)
                for item in raw
            )
        try:
            results = self.runner.predict(texts, explain=self.explain)
        except Exception as exc:  # report per request; the stub must keep serving
            error = pb.TritonError(f"{type(exc).__name__}: {exc}")
            return [pb.InferenceResponse(output_tensors=[], error=error) for _ in requests]

        responses = []
        start = 0
        for count in counts:
            chunk = results[start : start + count]
            start += count
            outputs = [
                pb.Tensor("LABEL", np.array([[r.label.encode()] for r in chunk], dtype=np.object_)),
                pb.Tensor("PROBS", np.array([r.probabilities for r in chunk], dtype=np.float32)),
                pb.Tensor(
                    "EXPLANATION",
                    np.array(
                        [[json.dumps(r.explanation, ensure_ascii=False).encode()] for r in chunk],
                        dtype=np.object_,
                    ),
                ),
                pb.Tensor("TRUNCATED", np.array([[r.truncated] for r in chunk], dtype=np.bool_)),
                pb.Tensor("ADAPTER", np.array([[r.adapter_hash.encode()] for r in chunk], dtype=np.object_)),
            ]
            responses.append(pb.InferenceResponse(output_tensors=outputs))
        return responses

    def finalize(self) -> None:
        """Release the runner when Triton unloads the instance."""
        self.runner = None
