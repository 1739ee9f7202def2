"""The emerging-class scenario run small: the drift is caught quickly and the update recovers (minutes)."""

from __future__ import annotations

import pytest

from bench.online_bench import ScenarioConfig


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
