"""Recorded task labels (online.labels.task_labels), no services: the next version's label set keeps
the declared order and appends accepted labels in acceptance order; accepting keeps the proposal
and refuses what cannot be accepted.
"""

from __future__ import annotations

import pytest

from driftline.models.tasks import get_task
from driftline.online.labels.task_labels import LabelError, TaskLabel, accept_label, label_set
from tests.support.tasks import news_task


def _row(label: str, status: str, at: int) -> TaskLabel:
    return TaskLabel("news_topic", label, status, "feedback", [], at, at)


class _Client:
    def __init__(self) -> None:
        self.inserted: list[tuple] = []

    def execute(self, sql: str, params=None):
        if sql.startswith("INSERT"):
            self.inserted.extend(params)
            return []
        if "FROM feedback" in sql:
            return [("science", 4)]
        return [("news_topic", "science", "proposed", "feedback", ["e1", "e2"], 100, 200)]


def test_label_set_appends_accepted_labels_in_acceptance_order() -> None:
    rows = [_row("travel", "accepted", 30), _row("health", "proposed", 10), _row("science", "accepted", 20)]
    assert label_set(news_task("propose"), rows) == [*get_task("news_topic").labels, "science", "travel"]


def test_accepting_keeps_the_proposal_and_refuses_what_cannot_be() -> None:
    client = _Client()
    record = accept_label(client, news_task("propose"), "science", who="ann")
    assert record.status == "accepted" and record.source == "cli:ann" and record.examples == ["e1", "e2"]
    assert record.proposed_ts_ms == 100 and record.updated_ts_ms > 200 and len(client.inserted) == 1
    for task, label, message in (
        (news_task("reject"), "science", "closed taxonomy"),
        (news_task("propose"), "tech", "already one of"),
        (news_task("propose"), "bad\tname", "not a usable label"),
    ):
        with pytest.raises(LabelError, match=message):
            accept_label(client, task, label)
