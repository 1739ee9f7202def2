-- 0005_explanations: word attributions computed off the serving path by `driftline explainer`.
-- Valid on ClickHouse 18.16 (local Debian server) and modern ClickHouse (chDB): no DateTime64, Map,
-- LowCardinality or JSON types. Statements end with ';' at end of line (the migration runner splits there).

-- One row per explained (event, model version): the top words behind the label that version gave,
-- written by the explainer service for the events a task's explain policy selects (reason
-- uncertain | sample | all) and by `driftline explain EVENT_ID` (reason on_demand).
-- tokens[i] carries scores[i] (signed gradient x input, rows scaled to sum(|score|) = 1 over all
-- tokens, top words only). A version folder that is gone, or a text that fails, gives a row with an
-- empty tokens/scores and the reason in `error` (empty on success), so nothing disappears silently.
-- ReplacingMergeTree keyed by (task, event_id, model_version): the service is at-least-once and a
-- replay recomputes the same events (the sample is a hash of task and event_id), which collapse to
-- the newest row; read with FINAL. Partitioned by the event's month, like `labels`, so a replay
-- computed in a later month still lands in the partition of the row it replaces.
-- Dashboards join it to labels on (task, event_id, model_version).
CREATE TABLE IF NOT EXISTS explanations
(
    task String,
    event_id String,
    model_version String,
    model_name String,
    adapter_hash String,
    label String,
    confidence Float32,
    tokens Array(String),
    scores Array(Float32),
    reason String,
    method String,
    event_time DateTime,
    event_ts_ms UInt64,
    computed_time DateTime,
    computed_ts_ms UInt64,
    latency_ms Float32,
    error String
)
ENGINE = ReplacingMergeTree(computed_ts_ms)
PARTITION BY toYYYYMM(event_time)
ORDER BY (task, event_id, model_version);
