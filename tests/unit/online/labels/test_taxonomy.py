"""The open taxonomy's feedback rules (online.labels: join, taxonomy), no services.

Closed tasks dead-letter an undeclared label; open ones accept any usable name and propose it once
enough distinct events carried it (accepted at once in ``accept`` mode), never twice, never for a
label already recorded; pending labels are bounded.
"""

from __future__ import annotations

import time

import pytest

from driftline.online.labels.join import FeedbackError, check_feedback
from driftline.online.labels.taxonomy import ProposalTracker, usable_label
from driftline.schema.events import FeedbackEvent
from tests.support.tasks import news_task


def _feedback(label: str) -> FeedbackEvent:
    return FeedbackEvent(event_id="e1", task="news_topic", label=label, timestamp=time.time())


def test_closed_tasks_reject_and_open_tasks_take_usable_new_names(monkeypatch) -> None:
    import driftline.online.labels.join as feedback

    with pytest.raises(FeedbackError) as refused:
        check_feedback(_feedback("science"))  # news_topic is closed (tasks.yaml)
    assert refused.value.reason == "unknown_label"
    tasks = {"news_topic": news_task("propose")}
    monkeypatch.setattr(feedback, "load_tasks", lambda: tasks)
    assert check_feedback(_feedback("science")).label == "science"
    assert check_feedback(_feedback("tech")).label == "tech"
    for bad in ("", " science", "x" * 65, "line\nbreak"):
        with pytest.raises(FeedbackError) as refused:
            check_feedback(_feedback(bad))
        assert refused.value.reason == "unknown_label" and not usable_label(bad)


def test_a_label_is_proposed_once_after_enough_distinct_events() -> None:
    tracker = ProposalTracker(max_examples=2)
    task = news_task("propose", min_examples=3)
    assert tracker.observe(task, "science", "e1") is None
    assert tracker.observe(task, "science", "e1") is None  # the same event again does not count
    assert tracker.observe(task, "tech", "e2") is None  # declared
    assert tracker.observe(task, "science", "e2") is None
    proposal = tracker.observe(task, "science", "e3")
    assert proposal is not None and proposal.status == "proposed" and proposal.examples == ("e1", "e2")
    assert tracker.observe(task, "science", "e4") is None  # announced already
    assert tracker.observe(news_task("reject"), "health", "e5") is None  # closed: never proposed
    tracker.known("news_topic", ["health"])  # recorded before a restart
    for i in range(5):
        assert tracker.observe(task, "health", f"h{i}") is None
    accepted = tracker.observe(news_task("accept", min_examples=1), "travel", "t1")
    assert accepted is not None and accepted.status == "accepted"


def test_pending_labels_are_bounded() -> None:
    tracker = ProposalTracker(max_pending=2)
    task = news_task("propose", min_examples=2)
    for label in ("a1", "a2", "a3"):  # a1 is dropped when a3 arrives
        tracker.observe(task, label, "x")
    assert tracker.observe(task, "a1", "y") is None  # counting starts over
    assert tracker.observe(task, "a3", "y") is not None
