"""``TritonClient``: the production ``InferenceClient``, async gRPC to Triton Inference Server.

Behaviour a streaming caller relies on:

- *Batching*: a call with more texts than the model's ``max_batch_size`` (64) is split into chunks
  sent concurrently; Triton's dynamic batcher may merge them again with other callers' requests.
- *Timeouts and retries*: each gRPC request has a deadline (``timeout_s``); UNAVAILABLE,
  DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED are retried (tenacity) with exponential backoff from
  ``backoff_s`` plus up to ``backoff_s`` of jitter (``retries`` extra attempts), because those are
  what a restarting or overloaded server returns. After the last attempt an
  ``InferenceOverloadedError`` says what happened: the server was busy, slow or away, not the input
  at fault, so a streaming caller applies backpressure (``driftline.streams.stages``) instead of
  dead-lettering. Other server errors raise a plain ``InferenceError``. ``timeout_s`` and ``retries``
  default to ``DRIFTLINE_TRITON__CLIENT_TIMEOUT_S`` and ``DRIFTLINE_TRITON__CLIENT_RETRIES``.
- *Missing models*: NOT_FOUND (unknown model or version) and "not at ready state" (a version that is
  unloaded or still loading, which Triton reports as UNAVAILABLE) are not retried;
  it raises ``ModelNotReadyError`` naming the model and version, because waiting will not load a
  model in explicit model-control mode.
- *Connection*: the gRPC channel comes from ``driftline.clients.triton_client`` (the one place that
  turns settings into a Triton client), created on first use inside the running event loop.
- *Labels*: read from the model config parameter ``labels`` (the order of ``PROBS``), cached per
  (model, version) so each version is asked once; ``Prediction.model_version`` is the version that
  actually answered (from the response), which matters while two versions are loaded during a swap.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter
from tritonclient.utils import InferenceServerException

from driftline.clients import triton_client, triton_url
from driftline.models.inference.base import (
    InferenceClient,
    InferenceError,
    InferenceOverloadedError,
    ModelNotReadyError,
    Prediction,
)
from driftline.settings import get_settings

T = TypeVar("T")

OUTPUTS = ("LABEL", "PROBS", "EXPLANATION", "TRUNCATED", "ADAPTER")
RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")
# Triton answers UNAVAILABLE (not NOT_FOUND) for a known version that is unloaded or still loading
NOT_READY_HINTS = ("is not found", "is not at ready state", "unknown model")


def _status(exc: InferenceServerException) -> str:
    return str(exc.status() or "").rsplit(".", 1)[-1]


def _not_ready(exc: InferenceServerException) -> bool:
    """NOT_FOUND, or Triton's UNAVAILABLE for a known version that is unloaded or still loading."""
    message = exc.message() or ""
    return _status(exc) == "NOT_FOUND" or any(hint in message for hint in NOT_READY_HINTS)


def _transient(exc: BaseException) -> bool:
    """Worth another attempt: a client-side timeout or a retryable status of a model that exists."""
    if isinstance(exc, TimeoutError):
        return True
    return isinstance(exc, InferenceServerException) and _status(exc) in RETRYABLE and not _not_ready(exc)


def _describe(task: str, version: str | None) -> str:
    return f"model {task!r} version {version}" if version else f"model {task!r} (serving version)"


def _attempts(retrying: AsyncRetrying) -> int:
    return int(retrying.statistics.get("attempt_number", 1))


class TritonClient(InferenceClient):
    """Classify through Triton over gRPC (``url`` defaults to the settings' Triton gRPC address).

    ``grpc_options`` go to ``driftline.clients.triton_client`` (``ssl``, ``channel_args`` ...).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout_s: float | None = None,
        retries: int | None = None,
        backoff_s: float = 0.2,
        max_batch_size: int = 64,
        max_concurrency: int = 8,
        **grpc_options: object,
    ) -> None:
        self.url = url or triton_url()
        triton = get_settings().triton
        self.timeout_s = triton.client_timeout_s if timeout_s is None else timeout_s
        self.retries = triton.client_retries if retries is None else retries
        self.backoff_s = backoff_s
        self.max_batch_size = max_batch_size
        self._max_concurrency = max_concurrency
        self._grpc_options = grpc_options
        self._grpc: grpcclient.InferenceServerClient | None = None
        self._labels: dict[tuple[str, str], list[str]] = {}
        self._semaphore: asyncio.Semaphore | None = None

    @property
    def _client(self) -> grpcclient.InferenceServerClient:
        """Created on first use, inside the running event loop the gRPC aio channel must belong to."""
        if self._grpc is None:
            self._grpc = triton_client(url=self.url, aio=True, **self._grpc_options)
            self._semaphore = asyncio.Semaphore(self._max_concurrency)
        return self._grpc

    async def _call(
        self, what: str, task: str, version: str | None, factory: Callable[[], Awaitable[T]]
    ) -> T:
        """Run ``factory()`` with retries on transient errors; map NOT_FOUND to ModelNotReadyError."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential_jitter(multiplier=self.backoff_s, jitter=self.backoff_s),
            retry=retry_if_exception(_transient),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await factory()
        except InferenceServerException as exc:
            if _not_ready(exc):
                raise ModelNotReadyError(
                    f"{_describe(task, version)} is missing or not loaded on Triton {self.url}: "
                    f"{exc.message()}"
                ) from exc
            error = InferenceOverloadedError if _transient(exc) else InferenceError
            raise error(
                f"{what} for {_describe(task, version)} failed after {_attempts(retrying)} attempt(s) "
                f"[{_status(exc) or 'error'}]: {exc.message()}"
            ) from exc
        except TimeoutError as exc:
            raise InferenceOverloadedError(
                f"{what} for {_describe(task, version)} timed out after {_attempts(retrying)} attempt(s)"
            ) from exc
        raise AssertionError("unreachable: tenacity either returns or reraises")

    async def labels(self, task: str, version: str = "") -> list[str]:
        """The ``labels`` parameter of the model config, cached per (model, version)."""
        key = (task, version)
        if key not in self._labels:
            response = await self._call(
                "get_model_config",
                task,
                version or None,
                lambda: self._client.get_model_config(
                    task, version, as_json=True, client_timeout=self.timeout_s
                ),
            )
            raw = response["config"].get("parameters", {}).get("labels", {}).get("string_value")
            if not raw:
                raise ModelNotReadyError(
                    f"{_describe(task, version)} has no 'labels' parameter in its config"
                )
            self._labels[key] = json.loads(raw)
        return self._labels[key]

    async def _infer_chunk(self, task: str, texts: Sequence[str], version: str | None) -> list[Prediction]:
        data = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)

        async def send():
            text = grpcclient.InferInput("TEXT", list(data.shape), "BYTES")
            text.set_data_from_numpy(data)
            outputs = [grpcclient.InferRequestedOutput(name) for name in OUTPUTS]
            return await self._client.infer(
                task, [text], model_version=version or "", outputs=outputs, client_timeout=self.timeout_s
            )

        self._client  # noqa: B018 - ensures the channel and semaphore exist
        assert self._semaphore is not None
        async with self._semaphore:
            start = time.perf_counter()
            result = await self._call("infer", task, version, send)
            latency_ms = (time.perf_counter() - start) * 1000.0
        served = result.get_response().model_version or (version or "")
        labels = await self.labels(task, served)
        label = result.as_numpy("LABEL").reshape(-1)
        probs = result.as_numpy("PROBS")
        explanation = result.as_numpy("EXPLANATION").reshape(-1)
        truncated = result.as_numpy("TRUNCATED").reshape(-1)
        adapter = result.as_numpy("ADAPTER").reshape(-1)
        return [
            Prediction(
                label=label[i].decode("utf-8"),
                probabilities={name: float(p) for name, p in zip(labels, probs[i], strict=True)},
                explanation=[(str(tok), float(score)) for tok, score in json.loads(explanation[i])],
                model_name=task,
                model_version=served,
                adapter_hash=adapter[i].decode("utf-8"),
                truncated=bool(truncated[i]),
                latency_ms=latency_ms,
            )
            for i in range(len(texts))
        ]

    async def predict(self, task: str, texts: Sequence[str], version: str | None = None) -> list[Prediction]:
        """Predictions for ``texts``, split into ``max_batch_size`` chunks sent concurrently."""
        if isinstance(texts, str):
            raise TypeError("predict() takes a sequence of texts, not a single string")
        if not texts:
            return []
        chunks = [texts[i : i + self.max_batch_size] for i in range(0, len(texts), self.max_batch_size)]
        results = await asyncio.gather(*(self._infer_chunk(task, chunk, version) for chunk in chunks))
        return [prediction for chunk in results for prediction in chunk]

    async def is_ready(self, task: str, version: str | None = None) -> bool:
        """True if Triton reports the model (version) ready; False on any error."""
        try:
            return bool(await self._client.is_model_ready(task, version or "", client_timeout=self.timeout_s))
        except InferenceServerException:
            return False

    async def load(self, task: str) -> None:
        """Ask Triton (explicit model control) to (re)load ``task`` per its config's version policy."""
        try:
            await self._client.load_model(task, client_timeout=max(self.timeout_s, 300.0))
        except InferenceServerException as exc:
            raise ModelNotReadyError(
                f"loading model {task!r} on Triton {self.url} failed: {exc.message()}"
            ) from exc

    async def unload(self, task: str) -> None:
        """Ask Triton to unload ``task``."""
        try:
            await self._client.unload_model(task, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise InferenceError(
                f"unloading model {task!r} on Triton {self.url} failed: {exc.message()}"
            ) from exc

    async def close(self) -> None:
        """Close the gRPC channel."""
        if self._grpc is not None:
            await self._grpc.close()
            self._grpc = None
