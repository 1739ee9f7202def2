-- 0010_shadow: what a shadow version answered for the live events mirrored to it, never published.
-- Valid on ClickHouse 18.16 (local Debian server) and modern ClickHouse (chDB): no DateTime64, Map,
-- LowCardinality or JSON types. Statements end with ';' at end of line (the migration runner splits there).

-- One row per mirrored event and shadow version (streams/mirror.py), next to the serving version's
-- answer for the same event. A redelivered batch mirrors again; rows collapse on
-- (model_name, shadow_version, event_id): read with FINAL.
CREATE TABLE IF NOT EXISTS shadow_predictions
(
    task String,
    event_id String,
    model_name String,
    event_time DateTime,
    event_ts_ms UInt64,
    mirrored_ts_ms UInt64,
    serving_version String,
    serving_label String,
    serving_confidence Float32,
    shadow_version String,
    shadow_adapter_hash String,
    shadow_label String,
    shadow_confidence Float32,
    label_names Array(String),
    probabilities Array(Float32),
    latency_ms Float32
)
ENGINE = ReplacingMergeTree(mirrored_ts_ms)
PARTITION BY toYYYYMM(event_time)
ORDER BY (model_name, shadow_version, event_id);
