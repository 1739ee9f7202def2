"""The feedback stage: validate feedback events and join them to the predictions they judge.

``FeedbackStage`` is Faust-free and hands every message back once, joined or dead-lettered; unmatched
feedback stays pending (offset unacknowledged) until ``grace_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from driftline.online.labels.join import FeedbackJoiner, JoinedFeedback, Unjoined
from driftline.schema.events import FeedbackEvent
from driftline.schema.records import DeadLetterRecord, PredictionRecord
from driftline.settings import LearningConfig
from driftline.streams.checkpoint import Release
from driftline.streams.decode import Rejection, decode_event
from driftline.streams.learning.lookup import Key, PredictionLookup
from driftline.streams.stages import RawMessage

log = logging.getLogger(__name__)

Reject = Callable[[RawMessage, Rejection], DeadLetterRecord]


@dataclass
class _Pending:
    seq: int
    msg: RawMessage
    event: FeedbackEvent
    release: Release
    first_seen: float

    @property
    def key(self) -> Key:
        return (self.event.task, self.event.event_id)


@dataclass
class FeedbackOutcome:
    """Feedback handed back by the stage, each with its release callback (joined: and its message)."""

    joined: list[tuple[JoinedFeedback, Release, RawMessage]] = field(default_factory=list)
    dead_letters: list[tuple[DeadLetterRecord, Release]] = field(default_factory=list)


class FeedbackStage:
    """Validates feedback and joins it to predictions (memory, then ClickHouse, with grace)."""

    def __init__(
        self,
        config: LearningConfig,
        *,
        reject: Reject,
        lookup: PredictionLookup | None,
        max_event_bytes: int,
        max_text_chars: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.reject = reject
        self.lookup = lookup
        self.max_event_bytes = max_event_bytes
        self.max_text_chars = max_text_chars
        self._clock = clock
        self.joiner = FeedbackJoiner(ttl_s=config.joiner_ttl_s, max_predictions=config.joiner_max)
        self._pending: dict[int, _Pending] = {}  # insertion-ordered by arrival
        self._seq = 0
        self._lock = asyncio.Lock()
        self.stats = {
            "joined_memory": 0,
            "joined_clickhouse": 0,
            "unknown": 0,
            "rejected": 0,
            "lookup_errors": 0,
        }
        self.last_lookup_error: str | None = None

    @property
    def pending(self) -> int:
        """Feedback waiting for its prediction."""
        return len(self._pending)

    def remember(self, predictions: Sequence[PredictionRecord]) -> None:
        """Keep what a join needs of each prediction (never the text: memory is bounded by count)."""
        for p in predictions:
            self.joiner.add_prediction(
                {
                    "event_id": p.event_id,
                    "task": p.task,
                    "label": p.label,
                    "confidence": p.confidence,
                    "model_version": p.model_version,
                    "adapter_hash": p.adapter_hash,
                }
            )

    async def intake(self, items: Sequence[tuple[RawMessage, Release]]) -> FeedbackOutcome:
        """Validate and try to join a batch of consumed feedback messages."""
        outcome = FeedbackOutcome()
        fresh: list[_Pending] = []
        now = self._clock()
        for msg, release in items:
            try:
                event = decode_event(
                    msg.value, "feedback", max_bytes=self.max_event_bytes, max_text_chars=self.max_text_chars
                )
            except Rejection as rejection:
                self.stats["rejected"] += 1
                outcome.dead_letters.append((self.reject(msg, rejection), release))
                continue
            assert isinstance(event, FeedbackEvent)
            self._seq += 1
            fresh.append(_Pending(self._seq, msg, event, release, now))
        async with self._lock:
            self._pending.update((p.seq, p) for p in fresh)
            await self._resolve(fresh, outcome)
        return outcome

    async def retry(self) -> FeedbackOutcome:
        """Look pending feedback up again; dead-letter what stayed unmatched past the grace period."""
        outcome = FeedbackOutcome()
        async with self._lock:
            if self._pending:
                await self._resolve(list(self._pending.values()), outcome)
        return outcome

    async def _resolve(self, candidates: list[_Pending], outcome: FeedbackOutcome) -> None:
        missing = [p for p in candidates if not self._join_local(p, outcome, "joined_memory")]
        if not missing:
            return
        looked_up = True
        if self.lookup is not None:
            try:
                found = await self.lookup.find(p.key for p in missing)
            except Exception as exc:
                looked_up = False
                found = {}
                self.stats["lookup_errors"] += 1
                self.last_lookup_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning(
                    "feedback lookup failed; pending feedback kept",
                    extra={"pending": len(self._pending), "error": self.last_lookup_error},
                )
            else:
                self.last_lookup_error = None
            for record in found.values():
                self.joiner.add_prediction(record)
            missing = [
                p
                for p in missing
                if p.key not in found or not self._join_local(p, outcome, "joined_clickhouse")
            ]
        if not looked_up:
            return
        now = self._clock()
        for p in missing:
            if now - p.first_seen < self.config.grace_s:
                continue
            del self._pending[p.seq]
            self.stats["unknown"] += 1
            rejection = Rejection(
                "unknown_event_id",
                f"no prediction for {p.event.task}/{p.event.event_id} after "
                f"{self.config.grace_s:g}s (worker memory and ClickHouse labels searched)",
                "UnknownEventId",
            )
            outcome.dead_letters.append((self.reject(p.msg, rejection), p.release))

    def _join_local(self, p: _Pending, outcome: FeedbackOutcome, stat: str) -> bool:
        """Join from the joiner's memory; False when it holds no prediction for the event (yet)."""
        result = self.joiner.join(p.event)
        if isinstance(result, Unjoined):
            if result.reason == "unknown_event_id":
                return False
            # decode_event already checked task and label, so this is a drifted tasks.yaml at most
            del self._pending[p.seq]
            rejection = Rejection(result.reason, result.detail, "FeedbackJoinError")
            outcome.dead_letters.append((self.reject(p.msg, rejection), p.release))
            return True
        del self._pending[p.seq]
        self.stats[stat] += 1
        outcome.joined.append((result, p.release, p.msg))
        return True
