"""The explain policy's selection rule (``driftline.models.explain.policy``) and its task settings."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from driftline.models.explain.policy import ExplainReason, explain_reason, sample_point, sampled
from driftline.models.tasks import ExplainPolicy, ExplainSettings, TaskConfig, load_tasks

IDS = [f"evt-{i}" for i in range(20_000)]


def _settings(policy: str, below: float = 0.7, rate: float = 0.0) -> ExplainSettings:
    return ExplainSettings(policy=ExplainPolicy(policy), confidence_below=below, sample_rate=rate)


def test_uncertain_is_strictly_below_the_threshold() -> None:
    s = _settings("uncertain", below=0.7, rate=0.0)
    assert explain_reason(s, "t", "e", 0.1) is ExplainReason.UNCERTAIN
    assert explain_reason(s, "t", "e", 0.6999) is ExplainReason.UNCERTAIN
    assert explain_reason(s, "t", "e", 0.7) is None
    assert explain_reason(s, "t", "e", 0.99) is None


def test_uncertain_adds_the_sample_of_confident_events() -> None:
    s = _settings("uncertain", below=0.7, rate=0.05)
    reasons = [explain_reason(s, "news", event_id, 0.95) for event_id in IDS[:4000]]
    picked = {r for r in reasons if r is not None}
    assert picked == {ExplainReason.SAMPLE}
    assert 0.03 < reasons.count(ExplainReason.SAMPLE) / 4000 < 0.07
    # an uncertain event is explained for its uncertainty, sampled or not
    assert all(explain_reason(s, "news", event_id, 0.3) is ExplainReason.UNCERTAIN for event_id in IDS[:200])


def test_sample_policy_ignores_confidence() -> None:
    s = _settings("sample", below=0.7, rate=0.1)
    low = [explain_reason(s, "news", event_id, 0.2) for event_id in IDS[:2000]]
    high = [explain_reason(s, "news", event_id, 0.99) for event_id in IDS[:2000]]
    assert low == high  # the same events, whatever their confidence
    assert set(low) == {None, ExplainReason.SAMPLE}
    never = _settings("sample", rate=0.0)
    assert all(explain_reason(never, "t", event_id, 0.1) is None for event_id in IDS[:500])


def test_none_and_all() -> None:
    for event_id, confidence in [("a", 0.01), ("b", 0.5), ("c", 0.999)]:
        assert explain_reason(_settings("none", rate=1.0), "t", event_id, confidence) is None
        assert explain_reason(_settings("all"), "t", event_id, confidence) is ExplainReason.ALL


@pytest.mark.parametrize("rate", [0.02, 0.3])
def test_sampling_rate_is_met_within_tolerance(rate: float) -> None:
    n = len(IDS)
    hits = sum(sampled("news_topic", event_id, rate) for event_id in IDS)
    sd = (rate * (1 - rate) / n) ** 0.5
    assert abs(hits / n - rate) < 4 * sd, (hits, n)


def test_sampling_is_deterministic_per_task_and_event() -> None:
    first = [sampled("news_topic", event_id, 0.1) for event_id in IDS[:3000]]
    assert first == [sampled("news_topic", event_id, 0.1) for event_id in IDS[:3000]]  # a replay agrees
    other_task = [sampled("chat_sentiment", event_id, 0.1) for event_id in IDS[:3000]]
    assert other_task != first  # the task is part of the key: tasks sample independently
    assert all(0.0 <= sample_point("t", event_id) < 1.0 for event_id in IDS[:3000])


def test_a_higher_rate_keeps_every_event_a_lower_rate_chose() -> None:
    low = {e for e in IDS if sampled("news_topic", e, 0.01)}
    high = {e for e in IDS if sampled("news_topic", e, 0.05)}
    assert low and low < high


def test_task_settings_default_to_uncertain_and_are_validated() -> None:
    default = ExplainSettings()
    assert default.policy is ExplainPolicy.UNCERTAIN and 0 < default.sample_rate < 0.1
    for bad in ({"policy": "sometimes"}, {"confidence_below": 1.5}, {"sample_rate": -0.1}):
        with pytest.raises(ValidationError):
            ExplainSettings(**bad)
    spec = yaml.safe_load(
        "language: en\nencoder: minilm\ndataset: d\nlabels: [a, b]\n"
        "explain: {policy: sample, sample_rate: 0.5}\n"
    )
    task = TaskConfig(name="t", **spec)
    assert task.explain.policy is ExplainPolicy.SAMPLE and task.explain.sample_rate == 0.5
    assert task.explain.confidence_below == default.confidence_below
    for declared in load_tasks().values():  # the shipped tasks declare a policy that parses
        assert isinstance(declared.explain, ExplainSettings)
