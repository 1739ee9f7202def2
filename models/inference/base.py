"""The one inference-client abstraction.

Agents, the updater, tests and benchmarks all talk to a model through ``InferenceClient``. Two
implementations exist: ``TritonClient`` (async gRPC to Triton Inference Server, the production
path) and ``LocalClient`` (the same exported artifact run in-process, for tests and for comparing
against Triton). Both return the same ``Prediction`` records, so swapping them changes no caller.

Wire contract of every classifier model in ``triton_repo/`` (tensors only, so the same contract is
served by the local python backend and by Triton's native onnxruntime backend in production):

- input  ``INPUT_IDS``      INT64, dims [-1], token ids (special tokens included), right-padded
- input  ``ATTENTION_MASK`` INT64, dims [-1], 1 for a token, 0 for padding
- output ``PROBS``          FP32,  dims [num_labels], softmax probabilities in label order
- config parameters: ``labels`` (JSON, the order of ``PROBS``), ``encoder``, ``max_length``,
  ``normalize_input``, ``truncation`` (how a client encodes text: ``driftline.models.text.codec``)
  and ``versions`` (JSON: per served version its ``adapter_hash``, ``engine`` and ``labels``).

Clients encode texts with ``TextCodec`` and shape calls with ``plan_batches`` (length-sorted, cut by
a token budget); explanations are not part of serving (the explainer service computes them).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field

#: a candidate served beside a model as its shadow is the model ``<model>__shadow`` (models.shadow)
SHADOW_SUFFIX = "__shadow"


def shadow_name(model: str) -> str:
    """The Triton model name of ``model``'s shadow."""
    return f"{model}{SHADOW_SUFFIX}"


class InferenceError(RuntimeError):
    """Inference failed; a plain one is an error the server returned for this request (the input may
    be at fault), the subclasses below say the service is (overloaded, or the model not loaded)."""


class ModelNotReadyError(InferenceError):
    """The requested model or version is missing or not loaded; retrying will not help by itself."""


class InferenceOverloadedError(InferenceError):
    """The server is busy or slow (deadline exceeded, unavailable, resource exhausted, client timeout).

    Not the input's fault: a streaming caller backs off and retries the same input (backpressure)
    instead of dead-lettering it. Raised after the client's own retries were spent.
    """


@dataclass(frozen=True, slots=True)
class Prediction:
    """One classified text, with the provenance analysts need on every label row."""

    label: str
    probabilities: dict[str, float]
    explanation: list[tuple[str, float]]  # empty from serving; the explainer fills its own table
    model_name: str
    model_version: str
    adapter_hash: str
    truncated: bool = False
    latency_ms: float = 0.0
    engine: str = ""  # the inference engine that computed it (``driftline.models.engines``)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def confidence(self) -> float:
        """Probability of the predicted label."""
        return self.probabilities.get(self.label, 0.0)


class InferenceClient(abc.ABC):
    """Classify batches of texts for a task. Implementations must be safe to share in one event loop."""

    @abc.abstractmethod
    async def predict(self, task: str, texts: Sequence[str], version: str | None = None) -> list[Prediction]:
        """Return one prediction per text, in order. ``version=None`` means the serving version."""

    @abc.abstractmethod
    async def is_ready(self, task: str, version: str | None = None) -> bool:
        """Whether the task's model (or that version) can take requests now."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    async def __aenter__(self) -> InferenceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
