"""Triton python-backend model: runs a version's chosen inference engine on token-id tensors.

For a Triton with only the python backend (nvidia-pytriton's); it speaks the native onnxruntime backend's
tensor contract, so clients cannot tell them apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PARAM_THREADS = "num_threads"
PARAM_VERSIONS = "versions"


def _param(config: dict, key: str) -> str | None:
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return value if value not in (None, "") else None


class TritonPythonModel:
    """Loads the version folder's engine once per instance; serves INPUT_IDS/ATTENTION_MASK -> PROBS."""

    def initialize(self, args: dict) -> None:
        """Load this version folder's chosen engine and check it against the model config."""
        import triton_python_backend_utils as pb_utils

        from driftline.models.artifacts import read_meta
        from driftline.models.engines.base import load_engine

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        meta = read_meta(version_dir)
        listed = json.loads(_param(config, PARAM_VERSIONS) or "{}").get(str(args["model_version"]))
        if listed is not None and listed.get("labels") not in (None, list(meta.labels)):
            raise ValueError(
                f"config lists labels {listed['labels']} for version {args['model_version']}, "
                f"the artifact has {meta.labels}"
            )
        threads = _param(config, PARAM_THREADS)
        self.num_labels = len(meta.labels)
        self.engine = load_engine(version_dir, meta.engine, int(threads) if threads else 0)

    def _inputs(self, request) -> tuple[np.ndarray, np.ndarray]:
        pb = self._pb
        ids = pb.get_input_tensor_by_name(request, "INPUT_IDS").as_numpy().astype(np.int64, copy=False)
        mask = pb.get_input_tensor_by_name(request, "ATTENTION_MASK").as_numpy().astype(np.int64, copy=False)
        if ids.ndim != 2 or ids.shape != mask.shape:
            raise ValueError(f"INPUT_IDS {ids.shape} and ATTENTION_MASK {mask.shape}: need equal 2-D shapes")
        return ids, mask

    def execute(self, requests: list) -> list:
        """Run each group of equally padded requests through the engine (Triton's entry point)."""
        pb = self._pb
        responses: list = [None] * len(requests)
        groups: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}
        for index, request in enumerate(requests):
            try:
                ids, mask = self._inputs(request)
            except Exception as exc:  # report on this request; the stub must keep serving
                responses[index] = pb.InferenceResponse(output_tensors=[], error=pb.TritonError(str(exc)))
                continue
            groups.setdefault(ids.shape[1], []).append((index, ids, mask))
        for group in groups.values():
            try:
                probs = self.engine.run(
                    np.concatenate([ids for _, ids, _ in group]), np.concatenate([m for _, _, m in group])
                ).astype(np.float32, copy=False)
            except Exception as exc:
                error = pb.TritonError(f"{type(exc).__name__}: {exc}")
                for index, _, _ in group:
                    responses[index] = pb.InferenceResponse(output_tensors=[], error=error)
                continue
            start = 0
            for index, ids, _ in group:
                rows = probs[start : start + len(ids)]
                start += len(ids)
                responses[index] = pb.InferenceResponse(output_tensors=[pb.Tensor("PROBS", rows)])
        return responses

    def finalize(self) -> None:
        """Release the engine when Triton unloads the instance."""
        self.engine = None
