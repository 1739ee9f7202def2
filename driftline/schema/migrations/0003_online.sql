-- 0003_online: feedback joined to predictions, drift detections, and the model registry.
-- Valid on ClickHouse 18.16 (local Debian server) and modern ClickHouse (chDB): no DateTime64, Map,
-- LowCardinality or JSON types. Statements end with ';' at end of line (the migration runner splits there).

-- One row per feedback label joined to the prediction it judges (online/labels/join.py JoinedFeedback.to_row).
-- ReplacingMergeTree on (task, event_id): a corrected label replaces the earlier one (newest join wins).
CREATE TABLE IF NOT EXISTS feedback
(
    task String,
    event_id String,
    label String,
    source String,
    feedback_time DateTime,
    feedback_ts_ms UInt64,
    joined_ts_ms UInt64,
    predicted_label String,
    correct UInt8,
    confidence Float32,
    model_version String,
    adapter_hash String
)
ENGINE = ReplacingMergeTree(joined_ts_ms)
PARTITION BY toYYYYMM(feedback_time)
ORDER BY (task, event_id);

-- Accuracy of served predictions per model version, as judged by feedback (FINAL: one label per event).
CREATE VIEW IF NOT EXISTS feedback_accuracy AS
SELECT
    task,
    model_version,
    adapter_hash,
    count() AS n,
    sum(correct) AS n_correct,
    avg(correct) AS accuracy,
    min(feedback_time) AS first_feedback,
    max(feedback_time) AS last_feedback
FROM feedback FINAL
GROUP BY task, model_version, adapter_hash;

-- Every drift detection (online/drift/base.py DriftEvent.to_row); also published to the alerts topic.
CREATE TABLE IF NOT EXISTS drift_events
(
    drift_id String,
    task String,
    detector String,
    signal String,
    detected_time DateTime,
    detected_ts_ms UInt64,
    statistic Float64,
    window_size UInt32,
    event_count UInt64,
    model_version String,
    adapter_hash String,
    severity String,
    details String
)
ENGINE = ReplacingMergeTree(detected_ts_ms)
PARTITION BY toYYYYMM(detected_time)
ORDER BY (task, detected_ts_ms, drift_id);

-- The model registry (online/serving/registry.py): one row per candidate adapter and Triton version.
-- version is the Triton version number as a string (like labels.model_version), '' = never exported.
-- status: candidate | promoted | serving |
-- retired | rejected | rolled_back. Status changes insert a newer row (updated_ts_ms) that replaces
-- the old one; read with FINAL. metrics is a JSON document kept as a String.
CREATE TABLE IF NOT EXISTS model_versions
(
    task String,
    version String,
    adapter_hash String,
    parent_hash String,
    status String,
    metrics String,
    reason String,
    artifact_path String,
    created_time DateTime,
    created_ts_ms UInt64,
    updated_ts_ms UInt64
)
ENGINE = ReplacingMergeTree(updated_ts_ms)
ORDER BY (task, version, adapter_hash);
