"""``TritonClient``: the production ``InferenceClient``, async gRPC to Triton Inference Server.

Batches by token budget, retries overload with backoff and then raises ``InferenceOverloadedError``
(backpressure), and raises ``ModelNotReadyError`` for a missing model or version.
"""

from __future__ import annotations

import asyncio
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
    ModelInfo,
    ModelNotReadyError,
    Prediction,
    VersionInfo,
    classify,
)
from driftline.settings import get_settings

T = TypeVar("T")

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
        token_budget: int | None = None,
        **grpc_options: object,
    ) -> None:
        self.url = url or triton_url()
        triton = get_settings().triton
        self.timeout_s = triton.client_timeout_s if timeout_s is None else timeout_s
        self.retries = triton.client_retries if retries is None else retries
        self.backoff_s = backoff_s
        self.max_batch_size = max_batch_size
        self.token_budget = triton.token_budget if token_budget is None else token_budget
        self._max_concurrency = max_concurrency
        self._grpc_options = grpc_options
        self._grpc: grpcclient.InferenceServerClient | None = None
        self._models: dict[str, ModelInfo] = {}
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

    async def model_info(self, task: str, refresh: bool = False) -> ModelInfo:
        """The model's ``ModelInfo`` from its config parameters, cached per model until ``refresh``."""
        if refresh or task not in self._models:
            response = await self._call(
                "get_model_config",
                task,
                None,
                lambda: self._client.get_model_config(task, as_json=True, client_timeout=self.timeout_s),
            )
            raw = response["config"].get("parameters", {})
            parameters = {key: value.get("string_value", "") for key, value in raw.items()}
            self._models[task] = ModelInfo.from_parameters(task, parameters)
        return self._models[task]

    async def _infer(
        self, task: str, version: str | None, input_ids: np.ndarray, mask: np.ndarray
    ) -> tuple[np.ndarray, str]:
        """One padded batch: its probabilities and the version that answered."""

        async def send():
            inputs = [
                grpcclient.InferInput("INPUT_IDS", list(input_ids.shape), "INT64"),
                grpcclient.InferInput("ATTENTION_MASK", list(mask.shape), "INT64"),
            ]
            inputs[0].set_data_from_numpy(input_ids)
            inputs[1].set_data_from_numpy(mask)
            return await self._client.infer(
                task,
                inputs,
                model_version=version or "",
                outputs=[grpcclient.InferRequestedOutput("PROBS")],
                client_timeout=self.timeout_s,
            )

        self._client  # noqa: B018 - ensures the channel and semaphore exist
        assert self._semaphore is not None
        async with self._semaphore:
            result = await self._call("infer", task, version, send)
        served = result.get_response().model_version or (version or "")
        return result.as_numpy("PROBS"), served

    async def predict(self, task: str, texts: Sequence[str], version: str | None = None) -> list[Prediction]:
        """Predictions for ``texts``: encoded here, sent as length-sorted calls within the token budget."""
        if isinstance(texts, str):
            raise TypeError("predict() takes a sequence of texts, not a single string")
        if not texts:
            return []
        info = await self.model_info(task)

        async def describe(served: str) -> VersionInfo:
            return (await self.model_info(task, refresh=True)).version(served)

        return await classify(
            task,
            info,
            info.codec(version),
            texts,
            lambda ids, mask: self._infer(task, version, ids, mask),
            token_budget=self.token_budget,
            max_batch=self.max_batch_size,
            describe=describe,
        )

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
