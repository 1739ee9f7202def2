"""The one inference-client abstraction.

Agents, the updater, tests and benchmarks all talk to a model through ``InferenceClient``. Two
implementations exist: ``TritonClient`` (async gRPC to Triton Inference Server, the production
path) and ``LocalClient`` (the same exported artifact run in-process, for tests and for comparing
against Triton). Both return the same ``Prediction`` records, so swapping them changes no caller.

Wire contract of every classifier model in ``triton_repo/`` (python backend):

- input  ``TEXT``        BYTES, dims [1], UTF-8 text (batched by Triton's dynamic batcher)
- output ``LABEL``       BYTES, dims [1], the predicted label
- output ``PROBS``       FP32,  dims [num_labels], softmax probabilities in label order
- output ``EXPLANATION`` BYTES, dims [1], JSON list of [token, score] pairs, top 5
- output ``TRUNCATED``   BOOL,  dims [1], the text was cut to the task's max_length
- output ``ADAPTER``     BYTES, dims [1], hash of the adapter that produced the prediction
- config parameter ``labels``: JSON list giving the order of ``PROBS``
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field


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
    explanation: list[tuple[str, float]]
    model_name: str
    model_version: str
    adapter_hash: str
    truncated: bool = False
    latency_ms: float = 0.0
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
