"""Tuning of the worker's learning loop, from ``DRIFTLINE_LEARNING_<FIELD>`` environment variables.

Kept apart from ``driftline.streams.config`` (the pipeline's own knobs) and from ``online/online.yaml`` (the
detectors' statistics): these are the *streaming* decisions around the detectors - how long feedback
may wait for the prediction it judges, how much the worker remembers - so tests and the demo can
shorten the waits without touching detector thresholds.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, Field


class LearningConfig(BaseModel):
    # Feedback can overtake the label insert it refers to (the demo sends it ~1-2 s after the
    # event; a backlogged worker labels later still), so an unmatched id is retried this long
    # before it is dead-lettered as ``unknown_event_id``.
    grace_s: float = Field(60.0, ge=0)
    retry_s: float = Field(1.0, gt=0)  # how often unmatched feedback is looked up again
    max_pending: int = Field(10_000, ge=1)  # feedback waiting for its prediction; above, the agent waits
    joiner_ttl_s: float = Field(3600.0, gt=0)  # predictions remembered in memory (ClickHouse beyond)
    joiner_max: int = Field(100_000, ge=1)
    lookup_chunk: int = Field(1000, ge=1)  # event ids per ClickHouse lookup (query size limit)
    observe_max: int = Field(500, ge=1)  # observation batches per drift-watch step
    observe_within_s: float = Field(0.5, gt=0)

    @classmethod
    def from_env(cls, **overrides: object) -> LearningConfig:
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = os.environ.get(f"DRIFTLINE_LEARNING_{name.upper()}")
            if raw:
                values[name] = raw
        values.update(overrides)
        return cls.model_validate(values)
