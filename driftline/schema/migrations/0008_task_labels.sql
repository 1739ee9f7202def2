-- 0008_task_labels: labels outside a task's declared set, proposed by feedback or accepted by a person.
-- Valid on ClickHouse 18.16 (local Debian server) and modern ClickHouse (chDB): no DateTime64, Map,
-- LowCardinality or JSON types. Statements end with ';' at end of line (the migration runner splits there).

-- One row per (task, label) of the open taxonomy (online/labels/taxonomy.py, tasks.yaml `new_labels`):
-- status `proposed` (feedback carried it on new_label_min_examples events; a "class proposed" alert
-- went out) or `accepted` (`driftline labels accept TASK LABEL`, or a task in `accept` mode). A change
-- is a new row with a later updated_ts_ms: read with FINAL. examples are event ids that carried it.
CREATE TABLE IF NOT EXISTS task_labels
(
    task String,
    label String,
    status String,
    source String,
    examples Array(String),
    proposed_time DateTime,
    proposed_ts_ms UInt64,
    updated_ts_ms UInt64
)
ENGINE = ReplacingMergeTree(updated_ts_ms)
ORDER BY (task, label);
