"""``TritonClient``: the production ``InferenceClient``, async gRPC to Triton Inference Server.

Behaviour a streaming caller relies on:

- *Batching*: a call with more texts than the model's ``max_batch_size`` (64) is split into chunks
  sent concurrently; Triton's dynamic batcher may merge them again with other callers' requests.
- *Timeouts and retries*: each gRPC request has a deadline (``timeout_s``); UNAVAILABLE,
  DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED are retried with exponential backoff and jitter
  (``retries`` extra attempts), because those are what a restarting or overloaded server returns.
  After the last attempt an ``InferenceError`` says what happened.
- *Missing models*: NOT_FOUND (unknown model or version) and "not at ready state" (a version that is
  unloaded or still loading, which Triton reports as UNAVAILABLE) are not retried;
  it raises ``ModelNotReadyError`` naming the model and version, because waiting will not load a
  model in explicit model-control mode.
- *Labels*: read from the model config parameter ``labels`` (the order of ``PROBS``), cached per
  (model, version) so each version is asked once; ``Prediction.model_version`` is the version that
  actually answered (from the response), which matters while two versions are loaded during a swap.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from driftline.models.inference.base import InferenceClient, InferenceError, ModelNotReadyError, Prediction
from driftline.settings import get_settings

OUTPUTS = ("LABEL", "PROBS", "EXPLANATION", "TRUNCATED", "ADAPTER")
RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")
# Triton answers UNAVAILABLE (not NOT_FOUND) for a known version that is unloaded or still loading
NOT_READY_HINTS = ("is not found", "is not at ready state", "unknown model")


def _status(exc: InferenceServerException) -> str:
    return str(exc.status() or "").rsplit(".", 1)[-1]


def _describe(task: str, version: str | None) -> str:
    return f"model {task!r} version {version}" if version else f"model {task!r} (serving version)"


class TritonClient(InferenceClient):
    """Classify through Triton over gRPC (``url`` defaults to the settings' Triton gRPC address)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        max_batch_size: int = 64,
        max_concurrency: int = 8,
    ) -> None:
        self.url = url or get_settings().triton.grpc_url
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_batch_size = max_batch_size
        self._max_concurrency = max_concurrency
        self._grpc: grpcclient.InferenceServerClient | None = None
        self._labels: dict[tuple[str, str], list[str]] = {}
        self._semaphore: asyncio.Semaphore | None = None

    @property
    def _client(self) -> grpcclient.InferenceServerClient:
        """Created on first use, inside the running event loop the gRPC aio channel must belong to."""
        if self._grpc is None:
            self._grpc = grpcclient.InferenceServerClient(url=self.url)
            self._semaphore = asyncio.Semaphore(self._max_concurrency)
        return self._grpc

    async def _call(self, what: str, task: str, version: str | None, factory):
        """Run ``factory()`` with retries on transient errors; map NOT_FOUND to ModelNotReadyError."""
        attempt = 0
        while True:
            try:
                return await factory()
            except InferenceServerException as exc:
                status = _status(exc)
                message = exc.message() or ""
                if status == "NOT_FOUND" or any(hint in message for hint in NOT_READY_HINTS):
                    raise ModelNotReadyError(
                        f"{_describe(task, version)} is missing or not loaded on Triton {self.url}: "
                        f"{exc.message()}"
                    ) from exc
                if status not in RETRYABLE or attempt >= self.retries:
                    raise InferenceError(
                        f"{what} for {_describe(task, version)} failed after {attempt + 1} attempt(s) "
                        f"[{status or 'error'}]: {exc.message()}"
                    ) from exc
            except TimeoutError as exc:
                if attempt >= self.retries:
                    raise InferenceError(
                        f"{what} for {_describe(task, version)} timed out after {attempt + 1} attempt(s)"
                    ) from exc
            delay = self.backoff_s * (2**attempt) * (0.5 + random.random())
            attempt += 1
            await asyncio.sleep(delay)

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
        if isinstance(texts, str):
            raise TypeError("predict() takes a sequence of texts, not a single string")
        if not texts:
            return []
        chunks = [texts[i : i + self.max_batch_size] for i in range(0, len(texts), self.max_batch_size)]
        results = await asyncio.gather(*(self._infer_chunk(task, chunk, version) for chunk in chunks))
        return [prediction for chunk in results for prediction in chunk]

    async def is_ready(self, task: str, version: str | None = None) -> bool:
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
        try:
            await self._client.unload_model(task, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise InferenceError(
                f"unloading model {task!r} on Triton {self.url} failed: {exc.message()}"
            ) from exc

    async def close(self) -> None:
        if self._grpc is not None:
            await self._grpc.close()
            self._grpc = None
