-- 0004_analytics: analyst views over labels, feedback, drift, alerts and model versions.
-- Valid on ClickHouse 18.16 (local Debian server) and modern ClickHouse (chDB): no DateTime64, Map,
-- LowCardinality, JSON type, window functions or JOIN ... ON. Joins use the old
-- `ANY|ALL INNER|LEFT JOIN (subquery) USING (...)` form, with distinct column names on both sides.
-- Statements end with a semicolon at end of line (the migration runner splits there).
-- Documented for analysts in docs/analytics.md.

-- Per-minute rollup of labels, kept by a materialized view.
-- WHY a materialized view: every dashboard panel and most analyst questions are "counts / shares /
-- latency percentiles per minute (or hour) per task, label, channel or model version". Scanning
-- `labels` (text, probability arrays, explanations) for that re-reads wide rows on every refresh;
-- this table holds one small row per (task, minute, label, channel, model_version) cell, so a
-- 24-hour panel reads at most a few thousand rows however many events arrived.
-- WHY AggregatingMergeTree and not SummingMergeTree: `labels` is at-least-once (a replay after a
-- crash inserts the same (task, event_id) again; ReplacingMergeTree collapses it only at merge
-- time). A summed counter would count replays twice; `uniq(event_id)` states merge into a
-- de-duplicated event count (exact at per-minute volumes below ~65k distinct events per cell), and
-- latency percentiles and mean confidence need mergeable states too. `processed_state` counts raw
-- rows, so processed minus events shows how much was replayed. Minutes come from event_time, which
-- a replay keeps, so a replayed event lands in the cell it was first counted in (unless a new model
-- version labels it differently; then it shows under both versions, which is what happened).
CREATE TABLE IF NOT EXISTS labels_minute_agg
(
    minute DateTime,
    task String,
    label String,
    channel String,
    model_version String,
    events_state AggregateFunction(uniq, String),
    processed_state AggregateFunction(count),
    confidence_state AggregateFunction(avg, Float32),
    latency_state AggregateFunction(quantiles(0.5, 0.9, 0.99), Float32)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (task, minute, label, channel, model_version);

CREATE MATERIALIZED VIEW IF NOT EXISTS labels_minute_mv TO labels_minute_agg AS
SELECT
    toStartOfMinute(event_time) AS minute,
    task,
    label,
    channel,
    model_version,
    uniqState(event_id) AS events_state,
    countState() AS processed_state,
    avgState(confidence) AS confidence_state,
    quantilesState(0.5, 0.9, 0.99)(latency_ms) AS latency_state
FROM labels
GROUP BY minute, task, label, channel, model_version;

-- Backfill rows written before this migration (the view only sees new inserts). Rows inserted in
-- the instant between the two statements are counted twice in `processed` but not in `events`.
INSERT INTO labels_minute_agg
SELECT
    toStartOfMinute(event_time) AS minute,
    task,
    label,
    channel,
    model_version,
    uniqState(event_id) AS events_state,
    countState() AS processed_state,
    avgState(confidence) AS confidence_state,
    quantilesState(0.5, 0.9, 0.99)(latency_ms) AS latency_state
FROM labels
GROUP BY minute, task, label, channel, model_version;

-- Labels per minute per task and label: de-duplicated events, processed rows, mean confidence.
CREATE VIEW IF NOT EXISTS labels_per_minute AS
SELECT
    minute,
    task,
    label,
    uniqMerge(events_state) AS events,
    countMerge(processed_state) AS processed,
    avgMerge(confidence_state) AS avg_confidence
FROM labels_minute_agg
GROUP BY minute, task, label;

-- Inference latency percentiles per minute and task (latency_ms as written by the sink).
CREATE VIEW IF NOT EXISTS latency_per_minute AS
SELECT
    minute,
    task,
    countMerge(processed_state) AS processed,
    arrayElement(quantilesMerge(0.5, 0.9, 0.99)(latency_state), 1) AS p50_ms,
    arrayElement(quantilesMerge(0.5, 0.9, 0.99)(latency_state), 2) AS p90_ms,
    arrayElement(quantilesMerge(0.5, 0.9, 0.99)(latency_state), 3) AS p99_ms
FROM labels_minute_agg
GROUP BY minute, task;

-- Sentiment per channel and hour, for every task that emits `positive` / `negative` labels.
-- net_sentiment is (positive - negative) / events, in [-1, 1].
CREATE VIEW IF NOT EXISTS sentiment_by_channel AS
SELECT
    toStartOfHour(minute) AS hour,
    task,
    channel,
    uniqMergeIf(events_state, label = 'positive') AS positive,
    uniqMergeIf(events_state, label = 'negative') AS negative,
    uniqMerge(events_state) AS events,
    (toInt64(positive) - toInt64(negative)) / events AS net_sentiment
FROM labels_minute_agg
GROUP BY hour, task, channel
HAVING positive + negative > 0;

-- Hourly label trends: events per label and its share of the task's events in that hour
-- (for news_topic these are the topic trends).
CREATE VIEW IF NOT EXISTS topic_trends AS
SELECT
    hour,
    task,
    label,
    events,
    total_events,
    events / total_events AS share
FROM
(
    SELECT toStartOfHour(minute) AS hour, task, label, uniqMerge(events_state) AS events
    FROM labels_minute_agg
    GROUP BY hour, task, label
) AS per_label
ANY LEFT JOIN
(
    SELECT toStartOfHour(minute) AS hour, task, uniqMerge(events_state) AS total_events
    FROM labels_minute_agg
    GROUP BY hour, task
) AS per_task USING (hour, task);

-- One row per event that received feedback: the (de-duplicated) prediction next to the feedback
-- label. feedback is the small side, so it is the right-hand (in-memory) table of the join.
CREATE VIEW IF NOT EXISTS graded_predictions AS
SELECT
    task,
    event_id,
    processed_time,
    channel,
    model_version,
    adapter_hash,
    label AS predicted,
    confidence,
    true_label,
    feedback_time,
    label = true_label AS correct
FROM
(
    SELECT task, event_id, processed_time, channel, model_version, adapter_hash, label, confidence
    FROM labels FINAL
) AS predictions
ANY INNER JOIN
(
    SELECT task, event_id, label AS true_label, feedback_time
    FROM feedback FINAL
) AS graded USING (task, event_id);

-- Accuracy per model version and hour of prediction, graded by feedback.
CREATE VIEW IF NOT EXISTS accuracy_by_model_version AS
SELECT
    toStartOfHour(processed_time) AS hour,
    task,
    model_version,
    count() AS graded,
    sum(correct) AS correct_predictions,
    correct_predictions / graded AS accuracy
FROM graded_predictions
GROUP BY hour, task, model_version;

-- The model registry, latest status per version (FINAL), with headline metrics pulled out of the
-- metrics JSON (flat keys; 0 when a key is absent). visitParam* functions (the only JSON readers
-- 18.16 has) want no space after the colon, which Python's json.dumps writes, hence the replaceAll.
CREATE VIEW IF NOT EXISTS model_versions_metrics AS
SELECT
    task,
    version,
    status,
    created_time,
    adapter_hash,
    parent_hash,
    reason,
    toDateTime(intDiv(updated_ts_ms, 1000)) AS updated_time,
    visitParamExtractFloat(replaceAll(metrics, '": ', '":'), 'accuracy') AS accuracy,
    visitParamExtractFloat(replaceAll(metrics, '": ', '":'), 'baseline_accuracy') AS baseline_accuracy,
    visitParamExtractFloat(replaceAll(metrics, '": ', '":'), 'macro_f1') AS macro_f1,
    visitParamExtractFloat(replaceAll(metrics, '": ', '":'), 'recent_gain') AS recent_gain,
    visitParamExtractFloat(replaceAll(metrics, '": ', '":'), 'candidate_original') AS original_test_score,
    metrics
FROM model_versions FINAL;

-- When each model version actually served a task: first and last minute it labelled events, taken
-- from the labels themselves (the registry says what was decided; this says what happened).
CREATE VIEW IF NOT EXISTS serving_versions AS
SELECT
    task,
    model_version,
    min(minute) AS first_seen,
    max(minute) AS last_seen,
    uniqMerge(events_state) AS events
FROM labels_minute_agg
GROUP BY task, model_version;

-- Everything that happened to a task on one time line: alerts (drift detections and registry
-- decisions are mirrored there with kind 'drift' and 'model') plus drift detections that never
-- became an alert row.
CREATE VIEW IF NOT EXISTS drift_alert_timeline AS
SELECT
    time,
    task,
    event_type,
    kind,
    severity,
    subject,
    message
FROM
(
    SELECT created_time AS time, task, 'alert' AS event_type, kind, severity, subject, message
    FROM alerts FINAL
    UNION ALL
    SELECT detected_time AS time, task, 'drift' AS event_type, 'drift' AS kind, severity,
        detector AS subject, concat(signal, ' statistic=', toString(statistic)) AS message
    FROM drift_events FINAL
    WHERE drift_id NOT IN (SELECT alert_id FROM alerts)
) AS timeline;
