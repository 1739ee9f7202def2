"""Mirror a share of live events to a model's shadow version; store its answers, never publish them.

``ShadowMirror`` sends hashed-selected events to ``<model>__shadow`` off the serving path and stores
``ShadowRecord`` rows for the updater's shadow decision.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence

from driftline.models.inference.base import InferenceClient, InferenceError, shadow_name
from driftline.schema.records import PredictionRecord, ShadowRecord
from driftline.streams.sinks.base import BatchingSink

log = logging.getLogger(__name__)


def mirrored(event_id: str, share: float) -> bool:
    """Whether ``event_id`` is in the mirrored ``share`` (stable across workers and redeliveries)."""
    if share <= 0:
        return False
    digest = int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")
    return digest / 2**64 < share


class ShadowMirror:
    """Prediction hook: the mirrored events of each batch go to the model's shadow as well."""

    def __init__(
        self,
        client: InferenceClient,
        sink: BatchingSink,
        *,
        share: float,
        check_s: float,
        max_in_flight: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client, self.sink, self.share, self.check_s = client, sink, share, check_s
        self.max_in_flight, self.clock = max_in_flight, clock
        self._ready: dict[str, tuple[float, bool]] = {}  # model -> (checked at, shadow ready)
        self._tasks: set[asyncio.Task] = set()
        self.mirrored = 0
        self.skipped = 0  # mirrored events not sent: too many mirrors in flight, or the shadow failed

    async def shadow_ready(self, model: str) -> bool:
        """Whether ``model`` has a shadow now (asked at most every ``check_s`` seconds)."""
        checked, ready = self._ready.get(model, (float("-inf"), False))
        if self.clock() - checked >= self.check_s:
            try:
                ready = await self.client.is_ready(shadow_name(model))
            except Exception:  # an unreachable server: no shadow this time
                ready = False
            self._ready[model] = (self.clock(), ready)
        return ready

    async def __call__(self, records: Sequence[PredictionRecord]) -> None:
        """Start mirroring the batch's chosen events (returns without waiting for the shadow)."""
        if self.share <= 0:
            return
        picked: dict[str, list[PredictionRecord]] = {}
        for record in records:
            if mirrored(record.event_id, self.share):
                picked.setdefault(record.model_name, []).append(record)
        for model, chosen in picked.items():
            if not await self.shadow_ready(model):
                continue
            if len(self._tasks) >= self.max_in_flight:
                self.skipped += len(chosen)
                continue
            task = asyncio.create_task(self._mirror(model, chosen))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _mirror(self, model: str, records: list[PredictionRecord]) -> None:
        started = time.perf_counter()
        try:
            answers = await self.client.predict(shadow_name(model), [r.text for r in records])
        except InferenceError as exc:  # the shadow went away mid-batch: samples lost, nothing else
            self.skipped += len(records)
            self._ready[model] = (self.clock(), False)
            log.info("shadow mirror skipped", extra={"model": model, "error": str(exc)[:200]})
            return
        latency = (time.perf_counter() - started) * 1000 / max(1, len(records))
        rows = []
        for record, p in zip(records, answers, strict=True):
            names = list(p.probabilities)
            rows.append(
                ShadowRecord(
                    task=record.task,
                    event_id=record.event_id,
                    model_name=model,
                    event_ts_ms=record.event_ts_ms,
                    serving_version=record.model_version,
                    serving_label=record.label,
                    serving_confidence=record.confidence,
                    shadow_version=str(p.model_version),
                    shadow_adapter_hash=p.adapter_hash,
                    shadow_label=p.label,
                    shadow_confidence=p.confidence,
                    label_names=names,
                    probabilities=[p.probabilities[n] for n in names],
                    latency_ms=latency,
                ).to_row()
            )
        self.mirrored += len(rows)
        await self.sink.add(rows)

    async def close(self) -> None:
        """Wait for the mirrors in flight (shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
