-- 0007_label_requests: the events the workers ask a person to label (online/labels/request_policy.py).
-- Valid on ClickHouse 18.16 (local Debian server) and modern ClickHouse (chDB): no DateTime64, Map,
-- LowCardinality or JSON types. Statements end with ';' at end of line (the migration runner splits there).

-- One row per (task, event) a worker requested, carrying what an annotator needs (text, prediction
-- with its probabilities, the version that made it) and why it was picked: reason `random` (a
-- hash-drawn uniform sample; sampling_probability is its inclusion probability, so accuracy on these
-- labels can be reweighted without bias) or `uncertain` (sampling_probability 0: chosen by the model's
-- uncertainty, not by chance). drift_active says whether a drift boosted the budget at the time.
-- status is requested | answered | expired; a change of status is a new row with a later
-- updated_ts_ms, so ReplacingMergeTree keeps the newest per (task, event_id): read with FINAL.
CREATE TABLE IF NOT EXISTS label_requests
(
    task String,
    event_id String,
    text String,
    label String,
    confidence Float32,
    label_names Array(String),
    probabilities Array(Float32),
    model_name String,
    model_version String,
    adapter_hash String,
    reason String,
    uncertainty Float32,
    sampling_probability Float64,
    drift_active UInt8,
    status String,
    event_time DateTime,
    event_ts_ms UInt64,
    requested_ts_ms UInt64,
    updated_ts_ms UInt64
)
ENGINE = ReplacingMergeTree(updated_ts_ms)
PARTITION BY toYYYYMM(event_time)
ORDER BY (task, event_id);
