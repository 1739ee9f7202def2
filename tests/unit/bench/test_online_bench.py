"""Emerging-class scenario: the stream is honest, the drift is caught quickly, the update recovers.

The first test only builds the stream (seconds); the second runs the whole scenario small (a cached
initial adapter shared with the demo, ~900 events, one or two 80-step updates; a few minutes on 2
cores).
"""

from __future__ import annotations

import pytest

from bench.online_bench import NEW_CLASS, STREAM_SPLITS, ScenarioConfig, build_stream, stream_pool
from driftline.online.update.data import dedupe_latest, hash_split


def test_stream_uses_only_unseen_splits_and_shifts_once() -> None:
    from driftline.models.cache import training_data
    from driftline.models.datasets import Example
    from driftline.models.tasks import get_task

    train, _ = training_data(get_task("news_topic"), exclude=[NEW_CLASS])
    train_ids = {e.id for e in train}
    cfg = ScenarioConfig(pre_events=200, post_events=400, entertainment_share=0.4, seed=3)
    stream = build_stream(cfg, stream_pool(train_ids))
    assert len(stream) == 600
    assert {e.split for e in stream} <= set(STREAM_SPLITS)
    assert not {e.id for e in stream} & train_ids
    assert NEW_CLASS not in {e.label for e in stream[:200]}
    share = sum(e.label == NEW_CLASS for e in stream[200:]) / 400
    assert 0.3 < share < 0.5
    # Repeated feedback on one text counts once, newest label wins, and never straddles the holdout.
    a, b = stream[0], stream[1]
    relabelled = Example(a.id, a.text, "politics" if a.label != "politics" else "sport")
    deduped = dedupe_latest([a, b, relabelled])
    assert [e.id for e in deduped] == [b.id, a.id] and deduped[-1].label == relabelled.label
    train_part, holdout = hash_split(stream, 0.2)
    assert not {e.id for e in train_part} & {e.id for e in holdout}


@pytest.mark.slow
def test_emerging_class_small() -> None:
    cfg = ScenarioConfig(
        pre_events=300,
        post_events=600,  # the gate may wait once for more post-drift labels (+80 events)
        labels_after_drift=60,
        initial_limit=150,  # the demo's initial news adapter: one cached artifact for both
        initial_max_steps=160,
        update_max_steps=80,
        replay_size=200,
        original_eval_size=150,
        feedback_rate=0.25,
    )
    from bench.online_bench import run_emerging_class

    result = run_emerging_class(cfg, progress=False)
    print(result.to_dict())
    assert result.pre_accuracy > 0.85
    assert result.shifted_accuracy < result.pre_accuracy - 0.15  # the new class costs accuracy
    assert result.detection_delay is not None and result.detection_delay <= 300
    assert result.false_alarms_before_shift == 0
    assert result.update_at_event is not None and result.promoted, result.decision
    metrics = result.decision_metrics
    assert metrics["candidate_recent"] >= metrics["serving_recent"] + metrics["margin"]
    assert metrics["candidate_original"] >= metrics["serving_original"] - metrics["tolerance"]
    assert result.n_after_update_unseen >= 50
    assert result.new_class_accuracy_after_unseen > result.new_class_accuracy_before + 0.5
    assert result.recovery_ratio >= 0.9, result.to_dict()
