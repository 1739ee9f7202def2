-- 0009_rescore: what another model version says about a past time range (`driftline rescore`).
-- Valid on ClickHouse 18.16 (local Debian server) and modern ClickHouse (chDB): no DateTime64, Map,
-- LowCardinality or JSON types. Statements end with ';' at end of line (the migration runner splits there).

-- One row per re-scored event and run, beside `labels` (never over it): a run is one version over
-- one range of the input topics, read back from Kafka retention. A resumed run writes an event
-- again; ReplacingMergeTree collapses it on (run_id, task, event_id): read with FINAL.
CREATE TABLE IF NOT EXISTS rescored_labels
(
    run_id String,
    task String,
    event_id String,
    topic String,
    partition UInt32,
    kafka_offset UInt64,
    event_time DateTime,
    event_ts_ms UInt64,
    rescored_ts_ms UInt64,
    model_name String,
    model_version String,
    adapter_hash String,
    engine String,
    label String,
    confidence Float32,
    label_names Array(String),
    probabilities Array(Float32)
)
ENGINE = ReplacingMergeTree(rescored_ts_ms)
PARTITION BY toYYYYMM(event_time)
ORDER BY (run_id, task, event_id);

-- Where a run stands per input partition: the next offset to read and the end it stops at (fixed
-- when the run starts, so a resumed run covers the same range). Written only after the rows before
-- next_offset are stored; the newest row wins (FINAL).
CREATE TABLE IF NOT EXISTS rescore_progress
(
    run_id String,
    task String,
    model_version String,
    topic String,
    partition UInt32,
    start_offset UInt64,
    next_offset UInt64,
    end_offset UInt64,
    from_ts_ms UInt64,
    to_ts_ms UInt64,
    updated_ts_ms UInt64
)
ENGINE = ReplacingMergeTree(updated_ts_ms)
ORDER BY (run_id, topic, partition);
