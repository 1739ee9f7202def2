"""Dashboard filters, the SQL behind each panel, and the JSON each panel receives.

Untrusted filters are validated (``FilterError`` -> 400) and reach ClickHouse only as query parameters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: named ranges offered by the page (seconds)
RANGES: dict[str, int] = {"15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800, "30d": 2592000}
#: bucket sizes, smallest first; the first giving at most MAX_BUCKETS buckets is used
BUCKET_STEPS_S = (60, 300, 900, 1800, 3600, 10800, 21600, 86400)
MAX_BUCKETS = 120
MAX_SPAN_S = 366 * 86400
TASK_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


class FilterError(ValueError):
    """A filter value the API refuses (answered with HTTP 400 and this message)."""


@dataclass(frozen=True)
class Filters:
    """Validated panel filters: a task ('' = all) and a half-open epoch-second range in ``step`` buckets."""

    task: str  # '' = all tasks
    start: int  # epoch seconds, inclusive
    end: int  # epoch seconds, exclusive
    step: int  # bucket size in seconds

    def params(self) -> dict[str, Any]:
        """The filters as clickhouse-driver query parameters."""
        return {"task": self.task, "start": self.start, "end": self.end, "step": self.step}

    def to_json(self) -> dict[str, Any]:
        """The filters as echoed back to the browser (``task`` None for all tasks)."""
        return {"task": self.task or None, "start": self.start, "end": self.end, "step_s": self.step}


def _int_param(params: Mapping[str, str], name: str) -> int:
    raw = params[name]
    if not re.fullmatch(r"\d{1,12}", raw):
        raise FilterError(f"{name} must be epoch seconds (digits only), got {raw[:40]!r}")
    return int(raw)


#: the default range: from the first to the last minute with labels (of the task), ``SPAN_SQL``
ALL = "all"


def parse_filters(params: Mapping[str, str], now: float, span: tuple[int, int] | None = None) -> Filters:
    """Validate ``task``, ``range`` (or ``from``/``to`` epoch seconds) into ``Filters``.

    ``range=all``, the default, is the span of the data: ``span`` (first and last labelled minute,
    epoch seconds, from ``SPAN_SQL``); with no data yet it is the last hour.
    """
    unknown = set(params) - {"task", "range", "from", "to"}
    if unknown:
        raise FilterError(f"unknown filter(s): {', '.join(sorted(unknown))[:100]}")
    task = params.get("task", "")
    if task in ("", "all"):
        task = ""
    elif not TASK_RE.fullmatch(task):
        raise FilterError("task must be 1-128 characters of letters, digits, '_', '.' or '-'")
    if "from" in params or "to" in params:
        if "range" in params:
            raise FilterError("give either range or from/to, not both")
        start = _int_param(params, "from") if "from" in params else int(now) - RANGES["1h"]
        end = _int_param(params, "to") if "to" in params else int(now) + 60
        if end <= start:
            raise FilterError("to must be after from")
        if end - start > MAX_SPAN_S:
            raise FilterError("time range longer than a year")
    else:
        name = params.get("range", ALL)
        if name not in RANGES and name != ALL:
            raise FilterError(f"range must be one of {ALL}, {', '.join(RANGES)}")
        if name == ALL and span is not None:
            start, end = span[0], max(span[1] + 60, span[0] + 60)  # the last minute included
            start = max(start, end - MAX_SPAN_S)
        else:
            end = int(now) + 60  # include the current, still-filling minute
            start = end - RANGES.get(name, RANGES["1h"])
    span = end - start
    step = next((s for s in BUCKET_STEPS_S if math.ceil(span / s) <= MAX_BUCKETS), BUCKET_STEPS_S[-1])
    start -= start % step  # align buckets to the step so they don't shift between refreshes
    return Filters(task=task, start=start, end=end, step=step)


_BUCKET = "toUInt32(intDiv(toUInt32({col}), %(step)s) * %(step)s)"
_AGG_WHERE = (
    "minute >= toDateTime(%(start)s) AND minute < toDateTime(%(end)s) AND (%(task)s = '' OR task = %(task)s)"
)

TASKS_SQL = "SELECT DISTINCT task FROM labels_minute_agg ORDER BY task LIMIT 500"

# the span of the data, the default range: first and last minute with labels (n = 0: none yet)
SPAN_SQL = """
SELECT toUInt32(min(minute)) AS first, toUInt32(max(minute)) AS last, count() AS n
FROM labels_minute_agg
WHERE (%(task)s = '' OR task = %(task)s)"""

LABELS_SQL = f"""
SELECT {_BUCKET.format(col="minute")} AS t, task, label,
       uniqMerge(events_state) AS events, countMerge(processed_state) AS processed
FROM labels_minute_agg
WHERE {_AGG_WHERE}
GROUP BY t, task, label
ORDER BY t, task, label"""

LATENCY_SQL = f"""
SELECT {_BUCKET.format(col="minute")} AS t, task,
       quantilesMerge(0.5, 0.9, 0.99)(latency_state) AS q, countMerge(processed_state) AS processed
FROM labels_minute_agg
WHERE {_AGG_WHERE}
GROUP BY t, task
ORDER BY t, task"""

SENTIMENT_SQL = f"""
SELECT task, channel,
       uniqMergeIf(events_state, label = 'positive') AS pos,
       uniqMergeIf(events_state, label = 'negative') AS neg,
       uniqMerge(events_state) AS total
FROM labels_minute_agg
WHERE {_AGG_WHERE}
GROUP BY task, channel
HAVING pos + neg > 0
ORDER BY total DESC, task, channel
LIMIT 50"""

# feedback already carries the judged prediction's model_version and correctness (0003), so the
# accuracy panel needs no join: it is bucketed by when the feedback arrived.
ACCURACY_SQL = f"""
SELECT {_BUCKET.format(col="feedback_time")} AS t, task, model_version,
       count() AS graded, sum(correct) AS n_correct
FROM feedback FINAL
WHERE feedback_time >= toDateTime(%(start)s) AND feedback_time < toDateTime(%(end)s)
  AND (%(task)s = '' OR task = %(task)s)
GROUP BY t, task, model_version
ORDER BY t, task, model_version"""

# first minute each model version labelled traffic: when a promotion actually took effect
SERVING_SQL = """
SELECT task, model_version, toUInt32(min(minute)) AS first_seen
FROM labels_minute_agg
WHERE (%(task)s = '' OR task = %(task)s)
GROUP BY task, model_version
HAVING first_seen >= %(start)s AND first_seen < %(end)s
ORDER BY first_seen"""

TIMELINE_SQL = """
SELECT toUInt32(time) AS t, task, event_type, kind, severity, subject, message
FROM drift_alert_timeline
WHERE time >= toDateTime(%(start)s) AND time < toDateTime(%(end)s) AND (%(task)s = '' OR task = %(task)s)
ORDER BY time DESC
LIMIT 500"""


# a shadow version against serving on the events mirrored to it (streams/mirror.py): agreement per bucket
SHADOW_SQL = f"""
SELECT {_BUCKET.format(col="event_time")} AS t, task, model_name, shadow_version, serving_version,
       count() AS mirrored, countIf(shadow_label = serving_label) AS agreed
FROM shadow_predictions FINAL
WHERE event_time >= toDateTime(%(start)s) AND event_time < toDateTime(%(end)s)
  AND (%(task)s = '' OR task = %(task)s)
GROUP BY t, task, model_name, shadow_version, serving_version
ORDER BY t, task, model_name, shadow_version"""


# The least confident predictions in range and why: labels LEFT JOIN explanations on (task, event_id,
# model_version), the explanation of the version that gave the label (written off the serving path
# by `driftline explainer`; an event the policy skipped, or not explained yet, has none). Both sides
# are bounded by the range (explanations carry the event's time) so the join stays small.
EXPLANATIONS_LIMIT = 50
EXPLANATIONS_SQL = f"""
SELECT task, event_id, model_version, label, confidence, t, text, tokens, scores, reason, error
FROM
(
    SELECT task, event_id, model_version, label, confidence, toUInt32(event_time) AS t, text
    FROM labels FINAL
    WHERE event_time >= toDateTime(%(start)s) AND event_time < toDateTime(%(end)s)
      AND (%(task)s = '' OR task = %(task)s)
    ORDER BY confidence ASC, event_time DESC
    LIMIT {EXPLANATIONS_LIMIT}
) AS least_confident
ANY LEFT JOIN
(
    SELECT task, event_id, model_version, tokens, scores, reason, error
    FROM explanations FINAL
    WHERE event_time >= toDateTime(%(start)s) AND event_time < toDateTime(%(end)s)
      AND (%(task)s = '' OR task = %(task)s)
) AS explained USING (task, event_id, model_version)
ORDER BY confidence ASC, t DESC"""

#: characters of an event's text shown next to its explanation
TEXT_PREVIEW = 240

# Estimated accuracy without labels (online/gates/estimate.py, CBPE): per bucket and version the mean
# top probability after temperature scaling, softmax(log p / T) = p^(1/T) / sum p^(1/T). ``inv_t``
# pairs versions with 1/T (fitted on the version's graded events, ``CALIBRATION_SQL``), 1 otherwise.
ESTIMATE_SQL = f"""
SELECT t, task, model_version, count() AS events, avg(top) AS estimated
FROM
(
    SELECT {_BUCKET.format(col="event_time")} AS t, task, model_version,
           transform(concat(task, ' v', model_version), %(versions)s, %(inv_t)s, 1.0) AS inv_t,
           arrayReduce('max', arrayMap(p -> pow(p, inv_t), probabilities))
               / arraySum(arrayMap(p -> pow(p, inv_t), probabilities)) AS top
    FROM labels FINAL
    WHERE event_time >= toDateTime(%(start)s) AND event_time < toDateTime(%(end)s)
      AND (%(task)s = '' OR task = %(task)s) AND length(probabilities) > 0
)
GROUP BY t, task, model_version
ORDER BY t, task, model_version"""

# the graded events of each version in range (a labelled holdout): their probabilities and the
# index of the true label, to fit the version's temperature; newest first, bounded per query
CALIBRATION_LIMIT = 5000
CALIBRATION_SQL = f"""
SELECT task, model_version, probabilities, indexOf(label_names, truth) AS truth_index
FROM
(
    SELECT task, event_id, model_version, label_names, probabilities
    FROM labels FINAL
    WHERE event_time >= toDateTime(%(start)s) AND event_time < toDateTime(%(end)s)
      AND (%(task)s = '' OR task = %(task)s)
) AS labelled
ANY INNER JOIN
(
    SELECT task, event_id, label AS truth FROM feedback FINAL WHERE (%(task)s = '' OR task = %(task)s)
) AS graded USING (task, event_id)
LIMIT {CALIBRATION_LIMIT}"""

# one event in full: its label row, explanation of that version, feedback, and re-scored labels
EVENT_QUERIES = {
    "label": """
SELECT task, event_id, model_name, model_version, adapter_hash, engine, label, confidence, label_names,
       probabilities, toUInt32(event_time) AS t, text, source, channel, topic, partition, kafka_offset
FROM labels FINAL WHERE task = %(task)s AND event_id = %(event_id)s""",
    "explanation": """
SELECT model_version, tokens, scores, reason, error FROM explanations FINAL
WHERE task = %(task)s AND event_id = %(event_id)s""",
    "feedback": """
SELECT label, source, correct, model_version, toUInt32(feedback_time) AS t FROM feedback FINAL
WHERE task = %(task)s AND event_id = %(event_id)s""",
    "rescored": """
SELECT run_id, model_version, label, confidence FROM rescored_labels FINAL
WHERE task = %(task)s AND event_id = %(event_id)s ORDER BY rescored_ts_ms DESC LIMIT 20""",
}
EVENT_ID_RE = re.compile(r"^[^\x00-\x1f]{1,256}$")


def event_params(params: Mapping[str, str]) -> dict[str, str]:
    """Validate the drill-down's ``task`` and ``event_id`` (``FilterError`` otherwise)."""
    task, event_id = params.get("task", ""), params.get("event_id", "")
    if not TASK_RE.fullmatch(task):
        raise FilterError("task must be 1-128 characters of letters, digits, '_', '.' or '-'")
    if not EVENT_ID_RE.fullmatch(event_id):
        raise FilterError("event_id must be 1-256 printable characters")
    return {"task": task, "event_id": event_id}


EVENT_FIELDS = (
    "task", "event_id", "model_name", "model_version", "adapter_hash", "engine", "label", "t", "text",
    "source", "channel", "topic", "partition",
)  # fmt: skip


def shape_event(parts: Mapping[str, list[dict]]) -> dict[str, Any] | None:
    """The drill-down of one event: None when it has no label row."""
    if not parts["label"]:
        return None
    row = parts["label"][0]
    version = row["model_version"]
    explanation = next((e for e in parts["explanation"] if e["model_version"] == version), None)
    probabilities = [
        [n, round(float(p), 4)] for n, p in zip(row["label_names"], row["probabilities"], strict=True)
    ]
    words = []
    if explanation is not None:
        words = [
            [w, round(float(v), 4)] for w, v in zip(explanation["tokens"], explanation["scores"], strict=True)
        ]
    feedback = [
        {
            "label": f["label"],
            "source": f["source"],
            "correct": bool(f["correct"]),
            "model_version": f["model_version"],
            "t": f["t"],
        }
        for f in parts["feedback"]
    ]
    rescored = [
        {
            "run_id": r["run_id"],
            "model_version": r["model_version"],
            "label": r["label"],
            "confidence": round(float(r["confidence"]), 4),
        }
        for r in parts["rescored"]
    ]
    return {
        **{k: row[k] for k in EVENT_FIELDS},
        "offset": row["kafka_offset"],
        "confidence": round(float(row["confidence"]), 4),
        "probabilities": sorted(probabilities, key=lambda pair: -pair[1]),
        "words": words,
        "explanation_reason": "" if explanation is None else explanation["reason"] or explanation["error"],
        "feedback": feedback,
        "rescored": rescored,
    }


def temperatures(rows: list[dict]) -> dict[str, float]:
    """Per ``task vN`` series, the temperature fitted on its graded events (``CALIBRATION_SQL`` rows)."""
    import numpy as np

    from driftline.online.gates.estimate import fit_temperature

    grouped: dict[str, tuple[list, list]] = {}
    for r in rows:
        if r["truth_index"] and r["probabilities"]:  # indexOf is 1-based, 0 = a label it lacks
            probs, truths = grouped.setdefault(f"{r['task']} v{r['model_version']}", ([], []))
            probs.append(r["probabilities"])
            truths.append(r["truth_index"] - 1)
    fitted = {}
    for name, (probs, truths) in grouped.items():
        widths = {len(p) for p in probs}
        if len(truths) >= MIN_CALIBRATION and len(widths) == 1:
            fitted[name] = fit_temperature(np.array(probs), truths)
    return fitted


#: graded events a version needs before its temperature is fitted (else T = 1)
MIN_CALIBRATION = 20


def estimate_params(f: Filters, fitted: Mapping[str, float]) -> dict[str, Any]:
    """``ESTIMATE_SQL`` parameters: the filters and each fitted version's 1/T."""
    names = sorted(fitted) or [""]  # a placeholder pair keeps both arrays typed (an empty one is not)
    return {**f.params(), "versions": names, "inv_t": [1.0 / fitted[n] if n else 1.0 for n in names]}


def _series(rows, key, value) -> list[dict[str, Any]]:
    grouped: dict[str, list] = {}
    for row in rows:
        grouped.setdefault(key(row), []).append(value(row))
    return [{"name": name, "points": points} for name, points in sorted(grouped.items())]


def shape_labels(rows: list[dict], f: Filters) -> dict[str, Any]:
    """Events per minute per task:label series, plus total events per task."""
    per_min = f.step / 60
    series = _series(rows, lambda r: f"{r['task']}:{r['label']}", lambda r: [r["t"], r["events"] / per_min])
    totals: dict[str, int] = {}
    for r in rows:
        totals[r["task"]] = totals.get(r["task"], 0) + int(r["events"])
    return {"filters": f.to_json(), "unit": "events/min", "series": series, "totals": totals}


def shape_latency(rows: list[dict], f: Filters) -> dict[str, Any]:
    """p50/p90/p99 inference latency series (ms) per task."""
    series = []
    for task in sorted({r["task"] for r in rows}):
        task_rows = [r for r in rows if r["task"] == task]
        for i, name in enumerate(("p50", "p90", "p99")):
            points = [[r["t"], round(float(r["q"][i]), 3)] for r in task_rows]
            series.append({"name": f"{task} {name}", "points": points})
    return {"filters": f.to_json(), "unit": "ms", "series": series}


def shape_sentiment(rows: list[dict], f: Filters) -> dict[str, Any]:
    """Positive/negative counts and net sentiment per task and channel."""
    channels = [
        {
            "task": r["task"],
            "channel": r["channel"] or "(none)",
            "positive": int(r["pos"]),
            "negative": int(r["neg"]),
            "events": int(r["total"]),
            "net": (int(r["pos"]) - int(r["neg"])) / int(r["total"]) if r["total"] else 0.0,
        }
        for r in rows
    ]
    return {"filters": f.to_json(), "channels": channels}


def shape_accuracy(
    rows: list[dict],
    serving: list[dict],
    timeline: list[dict],
    f: Filters,
    estimated: list[dict] | None = None,
    fitted: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Accuracy per model version over time (graded by feedback, and estimated without labels), with
    serving, drift and model markers; ``fitted`` names the versions whose estimate is calibrated."""
    series = _series(
        rows,
        lambda r: f"{r['task']} v{r['model_version'] or '?'}",
        lambda r: [r["t"], int(r["n_correct"]) / int(r["graded"]), int(r["graded"])],
    )
    estimates = _series(
        estimated or [],
        lambda r: f"{r['task']} v{r['model_version'] or '?'} estimated",
        lambda r: [r["t"], round(float(r["estimated"]), 4), int(r["events"])],
    )
    for line in estimates:
        line["estimated"] = True
        line["temperature"] = (fitted or {}).get(line["name"].removesuffix(" estimated"))
    series += estimates
    markers = [
        {"t": r["first_seen"], "type": "serving", "task": r["task"], "text": f"v{r['model_version']} serving"}
        for r in serving
    ]
    markers += [
        {
            "t": r["t"],
            "type": "drift" if r["kind"] == "drift" else "model",
            "task": r["task"],
            "text": r["subject"],
        }
        for r in timeline
        if r["kind"] in ("drift", "model")
    ]
    markers.sort(key=lambda m: m["t"])
    return {"filters": f.to_json(), "unit": "accuracy", "series": series, "markers": markers}


def shape_shadow(rows: list[dict], f: Filters) -> dict[str, Any]:
    """Agreement of each shadow version with the serving one, per bucket (n = mirrored events)."""
    series = _series(
        rows,
        lambda r: f"{r['model_name']} shadow v{r['shadow_version']} vs v{r['serving_version']}",
        lambda r: [r["t"], int(r["agreed"]) / int(r["mirrored"]), int(r["mirrored"])],
    )
    return {"filters": f.to_json(), "unit": "agreement", "series": series}


def shape_explanations(rows: list[dict], f: Filters) -> dict[str, Any]:
    """Least confident events first, each with its top words (empty when not explained)."""
    events = [
        {
            "t": r["t"],
            "task": r["task"],
            "event_id": r["event_id"],
            "model_version": r["model_version"],
            "label": r["label"],
            "confidence": round(float(r["confidence"]), 4),
            "text": r["text"][:TEXT_PREVIEW] + ("..." if len(r["text"]) > TEXT_PREVIEW else ""),
            "words": [[w, round(float(s), 4)] for w, s in zip(r["tokens"], r["scores"], strict=True)],
            "reason": r["reason"],  # '' = no explanation row for this version
            "error": r["error"],
        }
        for r in rows
    ]
    return {"filters": f.to_json(), "events": events}


def shape_timeline(rows: list[dict], f: Filters) -> dict[str, Any]:
    """The drift and alert timeline rows as they came from ClickHouse."""
    return {"filters": f.to_json(), "events": rows}
