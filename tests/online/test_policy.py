"""Promotion policy, update trigger and holdout split: pure decisions of the updater."""

from __future__ import annotations

from driftline.models.datasets import Example, text_id
from driftline.online.config import PromotionConfig, UpdaterConfig
from driftline.online.promotion import Scores, decide
from driftline.online.trigger import UpdateTrigger
from driftline.online.updater import split_holdout
from driftline.schema.records import DriftEvent

POLICY = PromotionConfig(margin=0.02, tolerance=0.01, min_holdout=20)


def test_promotes_only_when_better_recent_and_not_worse_original() -> None:
    ok = decide(POLICY, Scores(0.90, 0.95), Scores(0.70, 0.955), 50, 300)
    assert ok.promote and ok.metrics["recent_gain"] == 0.2
    small_gain = decide(POLICY, Scores(0.71, 0.96), Scores(0.70, 0.96), 50, 300)
    assert not small_gain.promote and "below margin" in small_gain.reason
    forgot = decide(POLICY, Scores(0.95, 0.90), Scores(0.70, 0.96), 50, 300)
    assert not forgot.promote and "original test set" in forgot.reason
    tiny = decide(POLICY, Scores(1.0, 1.0), Scores(0.0, 0.0), 5, 300)
    assert not tiny.promote and "held-out" in tiny.reason


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


def test_holdout_split_is_stable_and_disjoint() -> None:
    examples = [Example(text_id(f"text {i}"), f"text {i}", "sport") for i in range(1000)]
    train, holdout = split_holdout(examples, 0.2)
    assert 150 < len(holdout) < 250 and len(train) + len(holdout) == 1000
    assert split_holdout(list(reversed(examples)), 0.2)[1][::-1] == holdout
    assert not {e.id for e in train} & {e.id for e in holdout}
