-- 0001_core: the three tables every stage writes to.
-- Valid on ClickHouse 18.16 (local Debian server) and modern ClickHouse (chDB): no DateTime64, Map,
-- LowCardinality or JSON types. Statements end with ';' at end of line (the migration runner splits there).

-- One row per classified event. ReplacingMergeTree keyed by (task, event_id) so a replay after a
-- crash collapses to one row; the newest processing wins.
CREATE TABLE IF NOT EXISTS labels
(
    task String,
    event_id String,
    topic String,
    partition UInt32,
    kafka_offset UInt64,
    event_time DateTime,
    processed_time DateTime,
    event_ts_ms UInt64,
    processed_ts_ms UInt64,
    text String,
    source String,
    channel String,
    language String,
    label String,
    confidence Float32,
    label_names Array(String),
    probabilities Array(Float32),
    explanation Array(String),
    model_name String,
    model_version String,
    adapter_hash String,
    truncated UInt8,
    latency_ms Float32
)
ENGINE = ReplacingMergeTree(processed_ts_ms)
PARTITION BY toYYYYMM(event_time)
ORDER BY (task, event_id);

-- Drift, quality and operational alerts; evidence is a JSON document kept as a String.
CREATE TABLE IF NOT EXISTS alerts
(
    alert_id String,
    kind String,
    task String,
    created_time DateTime,
    created_ts_ms UInt64,
    severity String,
    subject String,
    message String,
    evidence String
)
ENGINE = ReplacingMergeTree(created_ts_ms)
PARTITION BY toYYYYMM(created_time)
ORDER BY (kind, alert_id);

-- Events that could not be processed, with the reason; the payload is kept base64-encoded.
CREATE TABLE IF NOT EXISTS dead_letters
(
    topic String,
    partition UInt32,
    kafka_offset UInt64,
    received_time DateTime,
    reason String,
    error_type String,
    payload_b64 String,
    payload_size UInt32
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(received_time)
ORDER BY (topic, partition, kafka_offset);
