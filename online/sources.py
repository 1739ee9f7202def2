"""Where the updater's labelled recent traffic comes from: ClickHouse in production, a list elsewhere.

``ExampleSource`` is the protocol the ``Updater`` reads; ``ClickHouseSource`` joins the newest
feedback labels with the text of the event they label (``labels.text``), in SQL valid on
ClickHouse 18.16 and on modern servers; ``ListSource`` holds feedback in memory (scenario,
benchmark, tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from driftline.models.datasets import Example, text_id


class ExampleSource(Protocol):
    """Where labelled recent traffic comes from (ClickHouse in production, a list in the benchmark)."""

    def recent_examples(self, task: str, limit: int) -> list[Example]:
        """Up to ``limit`` of the newest labelled examples of ``task``, oldest first."""


@dataclass
class ListSource:
    """In-memory feedback (scenario, benchmark, tests)."""

    examples: list[Example] = field(default_factory=list)

    def recent_examples(self, task: str, limit: int) -> list[Example]:
        """The last ``limit`` examples held."""
        return self.examples[-limit:]


class ClickHouseSource:
    """Newest feedback labels joined with the text of the event they label (``labels.text``).

    ``since_ts_ms``: ignore feedback joined before this time (``UpdaterConfig.feedback_since_ts_ms``).
    """

    def __init__(self, client: Any, since_ts_ms: int | None = None) -> None:
        self.client = client
        self.since_ts_ms = since_ts_ms or 0

    def recent_examples(self, task: str, limit: int) -> list[Example]:
        """Up to ``limit`` of the newest joined feedback labels of ``task`` with their texts, oldest first."""
        # 18.16-compatible join: ANY INNER JOIN (subquery) USING, distinct column names on each side.
        rows = self.client.execute(
            """
            SELECT event_id, event_text, label
            FROM (
                SELECT event_id, label, feedback_ts_ms FROM feedback FINAL
                WHERE task = %(task)s AND joined_ts_ms >= %(since)s
            )
            ANY INNER JOIN (SELECT event_id, text AS event_text FROM labels FINAL WHERE task = %(task)s)
            USING (event_id)
            ORDER BY feedback_ts_ms DESC
            LIMIT %(limit)s
            """,
            {"task": task, "limit": int(limit), "since": self.since_ts_ms},
        )
        return [
            Example(id=text_id(text), text=text, label=label) for _, text, label in reversed(rows) if text
        ]

    def count_since(self, task: str, since_ts_ms: int) -> int:
        """Feedback rows of ``task`` joined after ``since_ts_ms``."""
        rows = self.client.execute(
            "SELECT count() FROM feedback WHERE task = %(task)s AND joined_ts_ms > %(since)s",
            {"task": task, "since": int(since_ts_ms)},
        )
        return int(rows[0][0])
