"""The one inference-client abstraction, ``InferenceClient``, and the classifier wire contract.

``TritonClient`` (production) and ``LocalClient`` (in-process) return the same ``Prediction`` records;
the tensor contract (``INPUT_IDS``, ``ATTENTION_MASK`` -> ``PROBS``) is in docs/design.md.
"""

from __future__ import annotations

import abc
import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from driftline.models.text.batching import pad, plan_batches
from driftline.models.text.codec import TextCodec

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


#: run one padded batch: ``(input_ids, attention_mask) -> (probabilities, served version)``
RunBatch = Callable[[np.ndarray, np.ndarray], Awaitable[tuple[np.ndarray, str]]]


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """What one served version is: its label order, adapter hash and inference engine."""

    labels: list[str]
    adapter_hash: str = ""
    engine: str = ""
    # how the version reads text (None: as the model config says)
    encoder: str | None = None
    max_length: int | None = None
    normalize_input: bool | None = None


@dataclass(frozen=True)
class ModelInfo:
    """How to encode a model's texts and what each of its served versions is."""

    encoder: str
    max_length: int
    normalize_input: bool
    truncation: str
    labels: list[str]  # of the model config (the newest versions')
    versions: dict[str, VersionInfo] = field(default_factory=dict)

    def codec(self, version: str | None = None) -> TextCodec:
        """The text codec of ``version`` (as listed), else of the model (its newest version)."""
        listed = self.versions.get(str(version)) if version else None
        return TextCodec.for_encoder(
            listed.encoder if listed and listed.encoder else self.encoder,
            listed.max_length if listed and listed.max_length else self.max_length,
            normalize_input=self.normalize_input
            if listed is None or listed.normalize_input is None
            else listed.normalize_input,
            truncation=self.truncation,  # type: ignore[arg-type]
        )

    def version(self, version: str) -> VersionInfo:
        """The served version's description (the model's labels when the version is not listed)."""
        return self.versions.get(str(version)) or VersionInfo(labels=list(self.labels))

    @classmethod
    def from_parameters(cls, model: str, parameters: Mapping[str, str]) -> ModelInfo:
        """Read the config parameters export writes (names and meanings: models/inference/base.py)."""
        missing = [key for key in ("labels", "encoder", "max_length") if not parameters.get(key)]
        if missing:
            raise ModelNotReadyError(
                f"model {model!r}: its config lacks the parameters {missing}; re-export it with "
                "`driftline export` (the wire contract is tensors in, probabilities out)"
            )
        versions = json.loads(parameters.get("versions") or "{}")
        return cls(
            encoder=parameters["encoder"],
            max_length=int(parameters["max_length"]),
            normalize_input=(parameters.get("normalize_input") or "true").lower() == "true",
            truncation=parameters.get("truncation") or "head",
            labels=json.loads(parameters["labels"]),
            versions={
                str(v): VersionInfo(
                    labels=list(d.get("labels") or []),
                    adapter_hash=str(d.get("adapter_hash", "")),
                    engine=str(d.get("engine", "")),
                    encoder=d.get("encoder"),
                    max_length=int(d["max_length"]) if d.get("max_length") else None,
                    normalize_input=d.get("normalize_input"),
                )
                for v, d in versions.items()
            },
        )


async def classify(
    model: str,
    info: ModelInfo,
    codec: TextCodec,
    texts: Sequence[str],
    run_batch: RunBatch,
    *,
    token_budget: int,
    max_batch: int,
    describe: Callable[[str], Awaitable[VersionInfo]] | None = None,
) -> list[Prediction]:
    """Predictions for ``texts`` in input order (see the module docstring for the steps).

    ``describe`` maps a served version to its ``VersionInfo`` when ``info`` does not list it (a client
    refreshes its cached config then); by default ``info.version``.
    """
    if isinstance(texts, str):
        raise TypeError("predict() takes a sequence of texts, not a single string")
    if not texts:
        return []
    encoded = await asyncio.to_thread(codec.encode, texts)
    plan = plan_batches(encoded.lengths, token_budget, max_batch)

    async def run(batch: list[int]) -> tuple[list[int], np.ndarray, str, float]:
        input_ids, mask = pad([encoded.ids[i] for i in batch], codec.pad_id)
        started = time.perf_counter()
        probs, version = await run_batch(input_ids, mask)
        return batch, probs, str(version), (time.perf_counter() - started) * 1000.0

    answers = await asyncio.gather(*(run(batch) for batch in plan))
    predictions: list[Prediction | None] = [None] * len(texts)
    for batch, probs, version, latency_ms in answers:
        served = info.versions.get(version)
        if served is None:
            served = await describe(version) if describe is not None else info.version(version)
        labels = served.labels or info.labels
        if probs.shape != (len(batch), len(labels)):
            raise InferenceError(
                f"model {model!r} version {version} answered PROBS of shape {probs.shape} for "
                f"{len(batch)} texts and {len(labels)} labels"
            )
        for row, index in enumerate(batch):
            values = [float(p) for p in probs[row]]
            best = int(np.argmax(probs[row]))
            predictions[index] = Prediction(
                label=labels[best],
                probabilities=dict(zip(labels, values, strict=True)),
                explanation=[],
                model_name=model,
                model_version=version,
                adapter_hash=served.adapter_hash,
                truncated=encoded.truncated[index],
                latency_ms=latency_ms,
                engine=served.engine,
            )
    return [p for p in predictions if p is not None]
