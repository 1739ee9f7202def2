"""Emerging-class scenario, small: the drift is caught quickly and the update learns the new class."""

from __future__ import annotations

import pytest

from online.scenario import ScenarioConfig, run_emerging_class

pytestmark = pytest.mark.slow


def test_emerging_class_small() -> None:
    cfg = ScenarioConfig(
        pre_events=300,
        post_events=500,
        labels_after_drift=60,
        initial_limit=60,
        initial_max_steps=120,
        update_max_steps=80,
        replay_size=200,
        original_eval_size=150,
        feedback_rate=0.25,
    )
    result = run_emerging_class(cfg, progress=False)
    assert result.pre_accuracy > 0.8
    assert result.shifted_accuracy < result.pre_accuracy - 0.15  # the new class costs accuracy
    assert result.detection_delay is not None and result.detection_delay <= 300
    assert not [a for a in result.alerts if a["event"] < cfg.pre_events]  # no alarm before the shift
    assert result.update_at_event is not None and result.promoted, result.decision
    assert result.new_class_accuracy_after > result.new_class_accuracy_before + 0.3
