"""FeedbackJoiner: joins by event id, TTL expiry, late feedback via fallback, dead-letter reasons."""

from __future__ import annotations

import pytest

from driftline.online.labels.join import FeedbackJoiner, JoinedFeedback, Unjoined


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def _pred(event_id: str, label: str = "sport") -> dict:
    return {
        "event_id": event_id,
        "task": "news_topic",
        "label": label,
        "confidence": 0.9,
        "model_version": "3",
        "adapter_hash": "abc",
        "text": f"text {event_id}",
    }


def _fb(event_id: str, label: str = "sport", **extra) -> dict:
    return {
        "event_id": event_id,
        "task": "news_topic",
        "label": label,
        "source": "editor",
        "timestamp": "2024-05-01T10:00:00Z",
        **extra,
    }


def test_join_scores_correctness_and_keeps_provenance() -> None:
    joiner = FeedbackJoiner(clock=Clock())
    joiner.add_prediction(_pred("e1", "sport"))
    joiner.add_prediction(_pred("e2", "tech"))
    right, wrong = joiner.join(_fb("e1", "sport")), joiner.join(_fb("e2", "business"))
    assert isinstance(right, JoinedFeedback) and right.correct and right.first
    assert isinstance(wrong, JoinedFeedback) and not wrong.correct
    record = wrong.record()
    assert record.predicted_label == "tech" and record.correct == 0 and record.model_version == "3"
    assert record.feedback_ts_ms == 1714557600000
    again = joiner.join(_fb("e2", "tech"))
    assert isinstance(again, JoinedFeedback) and again.correct and not again.first


def test_late_feedback_joins_until_ttl_then_dead_letters() -> None:
    clock = Clock()
    joiner = FeedbackJoiner(ttl_s=60, clock=clock)
    joiner.add_prediction(_pred("late"))
    clock.t += 59
    assert isinstance(joiner.join(_fb("late")), JoinedFeedback)
    clock.t += 2
    result = joiner.join(_fb("late"))
    assert isinstance(result, Unjoined) and result.reason == "unknown_event_id"
    assert len(joiner) == 0 and joiner.stats["expired"] == 1


def test_fallback_lookup_finds_expired_prediction() -> None:
    clock = Clock()
    store = {("news_topic", "old"): _pred("old", "politics")}
    joiner = FeedbackJoiner(ttl_s=1, clock=clock, fallback=lambda task, eid: store.get((task, eid)))
    joined = joiner.join(_fb("old", "politics"))
    assert isinstance(joined, JoinedFeedback) and joined.correct
    assert joiner.stats["joined_fallback"] == 1


def test_size_cap_evicts_oldest() -> None:
    joiner = FeedbackJoiner(max_predictions=3, clock=Clock())
    for i in range(5):
        joiner.add_prediction(_pred(f"e{i}"))
    assert len(joiner) == 3
    assert isinstance(joiner.join(_fb("e0")), Unjoined)
    assert isinstance(joiner.join(_fb("e4")), JoinedFeedback)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("not a dict", "invalid_feedback"),
        ({"task": "news_topic", "label": "sport"}, "invalid_feedback"),
        (_fb("x", "weather"), "unknown_label"),
        ({**_fb("x"), "task": "nope"}, "unknown_task"),
        (_fb("x", timestamp="yesterday-ish"), "invalid_feedback"),
        (_fb("never-predicted"), "unknown_event_id"),
    ],
)
def test_bad_feedback_gets_a_dead_letter_reason(payload: object, reason: str) -> None:
    result = FeedbackJoiner(clock=Clock()).join(payload)
    assert isinstance(result, Unjoined) and result.reason == reason
    assert result.to_dead_letter()["reason"] == reason
