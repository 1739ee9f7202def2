"""The update trigger (online.update.trigger): labels after the drift, cooldown, waits and retries."""

from __future__ import annotations

from driftline.online.config import UpdaterConfig
from driftline.online.update.trigger import UpdateTrigger
from driftline.schema.records import DriftEvent


def _drift() -> DriftEvent:
    return DriftEvent(
        detector="error_rate",
        task="t",
        statistic=0.3,
        window=50,
        model_version="1",
        adapter_hash="h",
        event_count=10,
        signal="error_rate",
    )


def test_trigger_needs_labels_after_drift_and_respects_cooldown() -> None:
    now = [0.0]
    trigger = UpdateTrigger(
        UpdaterConfig(min_new_labels=10, labels_after_drift=0, retrain_every_labels=100, cooldown_s=60),
        clock=lambda: now[0],
    )
    trigger.on_drift(_drift())
    trigger.on_feedback(9)
    assert trigger.reason() is None
    trigger.on_feedback()
    assert "drift" in (trigger.reason() or "")
    trigger.mark_updated()
    trigger.on_drift(_drift())  # within cooldown: ignored
    trigger.on_feedback(150)
    assert trigger.reason() is None
    now[0] = 61
    assert "150 new feedback labels" in (trigger.reason() or "")


def test_trigger_waits_for_labels_that_came_after_the_drift() -> None:
    trigger = UpdateTrigger(
        UpdaterConfig(min_new_labels=10, labels_after_drift=20, retrain_every_labels=1000)
    )
    trigger.on_feedback(50)  # plenty of labels, all from before the change
    trigger.on_drift(_drift())
    trigger.on_feedback(19)
    assert trigger.reason() is None
    trigger.on_drift(_drift())  # a second detector firing does not restart the count
    trigger.on_feedback()
    assert "drift" in (trigger.reason() or "")


def test_trigger_wait_keeps_the_drift_and_retries_after_more_labels_without_cooldown() -> None:
    now = [0.0]
    trigger = UpdateTrigger(
        UpdaterConfig(min_new_labels=10, labels_after_drift=5, retrain_every_labels=1000, cooldown_s=600),
        clock=lambda: now[0],
    )
    first, later = _drift(), _drift()
    trigger.on_drift(first)
    trigger.on_drift(later)  # a second detector: the change still began at the first detection
    assert trigger.since_ts_ms == first.detected_ts_ms
    trigger.on_feedback(10)
    assert trigger.reason()
    drift, since = trigger.drift, trigger.since_ts_ms
    trigger.mark_updated()
    trigger.wait(drift, since, more=7)  # the gate: too little evidence
    trigger.on_feedback(6)
    assert trigger.reason() is None
    trigger.on_feedback()
    assert "more evidence" in (trigger.reason() or "")  # inside the cooldown, yet due
    assert trigger.since_ts_ms == first.detected_ts_ms and trigger.drift is drift
    trigger.mark_updated()
    assert trigger.reason() is None and trigger.since_ts_ms is None


def test_a_retry_counts_the_labels_the_try_had_not_seen_yet() -> None:
    """Labels reach the store after the trigger counts them: those already counted are not asked twice."""
    trigger = UpdateTrigger(
        UpdaterConfig(min_new_labels=1, labels_after_drift=20, retrain_every_labels=1000, cooldown_s=600)
    )
    trigger.on_drift(_drift())
    trigger.on_feedback(20)
    drift, since = trigger.drift, trigger.since_ts_ms
    assert trigger.reason()
    trigger.mark_updated()
    trigger.on_feedback(1)  # arrived while the try ran
    trigger.wait(drift, since, more=10, seen=12)  # it read 12 of the 20: 8 were still on their way
    assert trigger.reason() is None
    trigger.on_feedback(1)  # 8 + 2 = the 10 it asked for
    assert "more evidence" in (trigger.reason() or "")
    # a try that saw everything counted waits for all it asked for
    trigger.mark_updated()
    trigger.wait(drift, since, more=10, seen=22)
    trigger.on_feedback(9)
    assert trigger.reason() is None
    trigger.on_feedback(1)
    assert trigger.reason()
