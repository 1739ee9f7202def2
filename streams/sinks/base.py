"""``BatchingSink``: the one buffering/flushing/retrying abstraction every sink builds on.

Writes by size or age, retries forever, runs ``on_stored`` callbacks only once rows are durable, and bisects
a batch the store refuses for good so the refused rows go to the ``rejected`` handler.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_not_exception_type,
    wait_exponential,
)

from driftline.streams.metrics import PipelineMetrics

RowT = TypeVar("RowT")
OnStored = Callable[[], Awaitable[None] | None]

log = logging.getLogger(__name__)


class StoreRefused(Exception):
    """``_write`` raises this when the store refuses the rows for good: the same rows can never succeed."""

    def __init__(self, reason: str, error_type: str) -> None:
        super().__init__(reason)
        self.reason = reason  # the store's message
        self.error_type = error_type  # the underlying error's type (or the server's error name)


@dataclass(frozen=True)
class RejectedRow(Generic[RowT]):
    """A row the store refused for good, why, and the ``origin`` its ``add()`` gave (or None)."""

    sink: str
    row: RowT
    origin: Any
    reason: str
    error_type: str


OnRejected = Callable[[list[RejectedRow[Any]]], Awaitable[None] | None]


class BatchingSink(abc.ABC, Generic[RowT]):
    """Buffers rows, writes them in batches with retries, then runs their ``on_stored`` callbacks."""

    name: str = "sink"

    def __init__(
        self,
        *,
        max_rows: int = 2000,
        max_age_s: float = 1.0,
        backoff_s: float = 0.5,
        backoff_max_s: float = 10.0,
        metrics: PipelineMetrics | None = None,
        rejected: OnRejected | None = None,
    ) -> None:
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.metrics = metrics
        self.rejected = rejected  # gets the rows the store refused for good (None: log and count only)
        self._rows: list[RowT] = []
        self._origins: list[Any] = []  # per row: where it came from, for the ``rejected`` handler
        self._callbacks: list[OnStored] = []
        self._oldest: float | None = None
        self._lock = asyncio.Lock()
        self.last_error: str | None = None  # None while the last write succeeded (health check)
        self.last_flush_at: float | None = None
        self.stored_rows = 0
        self.rejected_rows = 0
        self._closed = False

    @abc.abstractmethod
    async def _write(self, rows: list[RowT]) -> None:
        """Store ``rows`` durably or raise (``StoreRefused`` when retrying them cannot help)."""

    @property
    def pending(self) -> int:
        """Rows buffered, not yet written."""
        return len(self._rows)

    @property
    def healthy(self) -> bool:
        """Whether the last write succeeded."""
        return self.last_error is None

    async def add(
        self, rows: Sequence[RowT], on_stored: OnStored | None = None, origins: Sequence[Any] | None = None
    ) -> None:
        """Buffer rows (callback runs once they are stored or handed over as refused); flushes when full.

        ``origins`` (one per row, e.g. the source message) is what the ``rejected`` handler gets back
        with a row the store refuses.
        """
        if origins is not None and len(origins) != len(rows):
            raise ValueError(f"{len(origins)} origins for {len(rows)} rows")
        if rows:
            if self._oldest is None:
                self._oldest = time.monotonic()
            self._rows.extend(rows)
            self._origins.extend(origins if origins is not None else [None] * len(rows))
        if on_stored is not None:
            self._callbacks.append(on_stored)
        self._gauge()
        if len(self._rows) >= self.max_rows:
            await self.flush()
        elif not self._rows and self._callbacks:
            await self.flush()  # nothing to write: release callbacks at once

    async def tick(self) -> None:
        """Flush when the oldest buffered row has waited ``max_age_s`` (the time bound)."""
        if self._oldest is not None and time.monotonic() - self._oldest >= self.max_age_s:
            await self.flush()
        self._gauge()

    async def flush(self) -> int:
        """Write everything buffered (refused rows handed over, see the module), then run the callbacks."""
        async with self._lock:
            rows, origins, callbacks = self._rows, self._origins, self._callbacks
            if not rows and not callbacks:
                return 0
            self._rows, self._origins, self._callbacks, self._oldest = [], [], [], None
            try:
                if rows:
                    refused = await self._store(rows, origins)
                    if refused:
                        await self._reject(refused)
            except BaseException:
                # cancelled (shutdown) before every row was stored or handed over: put them all back
                # (rows already stored are written again: at-least-once), and no callback runs
                self._rows[:0] = rows
                self._origins[:0] = origins
                self._callbacks[:0] = callbacks
                raise
            for callback in callbacks:
                result = callback()
                if inspect.isawaitable(result):
                    await result
            self._gauge()
            return len(rows)

    async def _store(self, rows: list[RowT], origins: list[Any], top: bool = True) -> list[RejectedRow[RowT]]:
        """Write ``rows``; a batch refused for good is bisected. Returns the rows refused alone."""
        try:
            await self._write_with_retry(rows)
        except StoreRefused as refusal:
            if len(rows) == 1:
                return [RejectedRow(self.name, rows[0], origins[0], refusal.reason, refusal.error_type)]
            if top:
                log.warning(
                    "sink batch refused, bisecting",
                    extra={"sink": self.name, "rows": len(rows), "error": refusal.reason[:500]},
                )
            half = len(rows) // 2
            return [
                *await self._store(rows[:half], origins[:half], top=False),
                *await self._store(rows[half:], origins[half:], top=False),
            ]
        return []

    async def _write_with_retry(self, rows: list[RowT]) -> None:
        """Write ``rows``, retrying with capped exponential backoff until it succeeds or is refused."""
        retrying = AsyncRetrying(
            # never CancelledError; StoreRefused goes to the caller at once
            retry=retry_if_exception_type(Exception) & retry_if_not_exception_type(StoreRefused),
            wait=wait_exponential(multiplier=self.backoff_s, max=self.backoff_max_s),
            before_sleep=lambda state: self._retrying(state, "sink write failed, retrying", len(rows)),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                started = time.perf_counter()
                await self._write(rows)
        elapsed = time.perf_counter() - started
        attempts = attempt.retry_state.attempt_number
        if attempts > 1:
            log.info("sink recovered", extra={"sink": self.name, "attempts": attempts})
        self.last_error = None
        self.last_flush_at = time.time()
        self.stored_rows += len(rows)
        if self.metrics:
            self.metrics.sink_rows.labels(self.name).inc(len(rows))
            self.metrics.sink_flush_latency.labels(self.name).observe(elapsed)
            self.metrics.sink_flush_rows.labels(self.name).observe(len(rows))

    async def _reject(self, refused: list[RejectedRow[RowT]]) -> None:
        """Count and log refused rows, then hand them to ``rejected`` (retried until it succeeds)."""
        self.rejected_rows += len(refused)
        if self.metrics:
            self.metrics.sink_rejected.labels(self.name).inc(len(refused))
        for r in refused:
            log.error(
                "row refused by the store",
                extra={
                    "sink": self.name,
                    "error": r.reason[:1000],
                    "error_type": r.error_type,
                    "origin": repr(r.origin)[:300],
                    "row": repr(r.row)[:4000],
                    "handled": self.rejected is not None,
                },
            )
        if self.rejected is None:
            return
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Exception),  # never CancelledError
            wait=wait_exponential(multiplier=self.backoff_s, max=self.backoff_max_s),
            before_sleep=lambda state: self._retrying(
                state, "handing refused rows over failed, retrying", len(refused)
            ),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                result = self.rejected(list(refused))
                if inspect.isawaitable(result):
                    await result
        self.last_error = None

    def _retrying(self, state: RetryCallState, message: str, rows: int) -> None:
        """Before each backoff sleep: record the error for /health, count and log the retry."""
        exc = state.outcome.exception() if state.outcome else None
        self.last_error = f"{type(exc).__name__}: {exc}"[:500]
        if self.metrics:
            self.metrics.sink_retries.labels(self.name).inc()
        log.warning(
            message,
            extra={
                "sink": self.name,
                "rows": rows,
                "attempt": state.attempt_number,
                "error": self.last_error,
                "retry_in_s": state.next_action.sleep if state.next_action else None,
            },
        )

    def _gauge(self) -> None:
        if self.metrics:
            self.metrics.sink_pending.labels(self.name).set(len(self._rows))
            age = time.monotonic() - self._oldest if self._oldest is not None else 0.0
            self.metrics.sink_lag.labels(self.name).set(age)

    async def close(self) -> None:
        """Final flush on shutdown (bounded by the caller's timeout)."""
        if not self._closed:
            self._closed = True
            await self.flush()
