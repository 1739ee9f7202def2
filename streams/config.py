"""Pipeline tuning read from the environment (``DRIFTLINE_PIPELINE_*``), validated once at start-up.

Addresses of Kafka/ClickHouse/Triton live in ``driftline.settings``; this module only holds the knobs
of the streaming service itself (batching, limits, alert windows), so a worker can be tuned without
touching code and tests can run with small windows and unique app ids.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, Field


class SurgeSettings(BaseModel):
    """Surge detection: a window's count against an EWMA of the previous windows' counts."""

    window_s: float = 60.0  # tumbling window length (event time)
    baseline_windows: int = 6  # how many previous windows feed the baseline
    ewma_alpha: float = 0.5  # weight of the most recent previous window in the baseline
    min_count: int = 20  # never alert below this many events in the window
    ratio: float = 3.0  # alert when count >= ratio * max(baseline, baseline_floor)
    baseline_floor: float = 1.0  # keeps "0 -> 5 events" from being an infinite surge
    samples: int = 5  # event ids kept as evidence
    negative_labels: list[str] = Field(default_factory=lambda: ["negative"])


class PipelineConfig(BaseModel):
    app_id: str = "driftline-pipeline"
    max_batch: int = 64  # stream.take() size bound: what one Triton call classifies
    batch_within_s: float = 0.2  # stream.take() time bound
    classify_concurrency: int = 1  # agent instances per input topic (overlap Kafka I/O with inference)
    sink_max_rows: int = 2000  # ClickHouse insert size bound
    sink_max_age_s: float = 1.0  # ClickHouse insert time bound
    sink_backoff_s: float = 0.5  # first retry delay of a failed insert (doubles, capped)
    sink_backoff_max_s: float = 10.0
    inference_backoff_s: float = 0.5
    inference_backoff_max_s: float = 10.0
    max_event_bytes: int = 1 << 20  # raw message size limit; bigger ones are dead-lettered unread
    max_text_chars: int = 100_000  # text field limit
    deadletter_payload_bytes: int = 256 << 10  # original bytes kept per dead letter (rest summarised)
    partitions: int = 4
    session_timeout_s: float = 30.0  # how long a dead worker holds its partitions before a rebalance
    surge: SurgeSettings = Field(default_factory=SurgeSettings)

    @classmethod
    def from_env(cls, **overrides: object) -> PipelineConfig:
        """Defaults, then ``DRIFTLINE_PIPELINE_<FIELD>`` / ``DRIFTLINE_SURGE_<FIELD>``, then overrides."""
        values: dict[str, object] = {}
        for name in cls.model_fields:
            if name == "surge":
                continue
            raw = os.environ.get(f"DRIFTLINE_PIPELINE_{name.upper()}")
            if raw:
                values[name] = raw
        if os.environ.get("DRIFTLINE_APP_ID"):
            values["app_id"] = os.environ["DRIFTLINE_APP_ID"]
        if os.environ.get("DRIFTLINE_TOPIC_PARTITIONS"):
            values["partitions"] = os.environ["DRIFTLINE_TOPIC_PARTITIONS"]
        surge: dict[str, object] = {}
        for name in SurgeSettings.model_fields:
            raw = os.environ.get(f"DRIFTLINE_SURGE_{name.upper()}")
            if raw:
                surge[name] = raw.split(",") if name == "negative_labels" else raw
        values["surge"] = SurgeSettings(**surge)
        values.update(overrides)
        return cls.model_validate(values)
