"""``BatchingSink``: the one buffering/flushing/retrying abstraction every sink builds on.

Rows are buffered and written in one ``_write`` call when the buffer reaches ``max_rows`` or its
oldest row is ``max_age_s`` old (``tick()``, called by a Faust timer, handles the time bound).

Every ``add()`` carries an optional ``on_stored`` callback that runs only after the rows it came
with are durably written - step 1 of the worker's ``Checkpoint`` (``driftline.streams.checkpoint``),
whose release callbacks the agents pass here. A failed write is retried with capped exponential
backoff *forever* (tenacity; rows stay buffered and ``add()`` blocks once the buffer is full, which
back-pressures the consumer). Duplicates that redelivery can cause are the sink's business (see
``ClickHouseSink``).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from driftline.streams.metrics import PipelineMetrics

Row = TypeVar("Row")
OnStored = Callable[[], Awaitable[None] | None]

log = logging.getLogger(__name__)


class BatchingSink(abc.ABC, Generic[Row]):
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
    ) -> None:
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.metrics = metrics
        self._rows: list[Row] = []
        self._callbacks: list[OnStored] = []
        self._oldest: float | None = None
        self._lock = asyncio.Lock()
        self.last_error: str | None = None  # None while the last write succeeded (health check)
        self.last_flush_at: float | None = None
        self.stored_rows = 0
        self._closed = False

    @abc.abstractmethod
    async def _write(self, rows: list[Row]) -> None:
        """Store ``rows`` durably or raise; may be called again with the same rows after a failure."""

    @property
    def pending(self) -> int:
        """Rows buffered, not yet written."""
        return len(self._rows)

    @property
    def healthy(self) -> bool:
        """Whether the last write succeeded."""
        return self.last_error is None

    async def add(self, rows: Sequence[Row], on_stored: OnStored | None = None) -> None:
        """Buffer rows (callback runs once they are stored); flushes when the size bound is hit."""
        if rows:
            if self._oldest is None:
                self._oldest = time.monotonic()
            self._rows.extend(rows)
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
        """Write everything buffered (retrying until it succeeds), then run the callbacks."""
        async with self._lock:
            rows, callbacks = self._rows, self._callbacks
            if not rows and not callbacks:
                return 0
            self._rows, self._callbacks, self._oldest = [], [], None
            try:
                if rows:
                    await self._write_with_retry(rows)
            except BaseException:
                # cancelled (shutdown) before the rows were stored: put them back, so nothing
                # pretends to be stored and no callback (offset ack) runs
                self._rows[:0] = rows
                self._callbacks[:0] = callbacks
                raise
            for callback in callbacks:
                result = callback()
                if asyncio.iscoroutine(result):
                    await result
            self._gauge()
            return len(rows)

    async def _write_with_retry(self, rows: list[Row]) -> None:
        """Write ``rows``, retrying with capped exponential backoff until it succeeds."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Exception),  # never CancelledError
            wait=wait_exponential(multiplier=self.backoff_s, max=self.backoff_max_s),
            before_sleep=lambda state: self._retrying_write(state, len(rows)),
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

    def _retrying_write(self, state: RetryCallState, rows: int) -> None:
        """Before each backoff sleep: record the error for /health, count and log the retry."""
        exc = state.outcome.exception() if state.outcome else None
        self.last_error = f"{type(exc).__name__}: {exc}"[:500]
        if self.metrics:
            self.metrics.sink_retries.labels(self.name).inc()
        log.warning(
            "sink write failed, retrying",
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
