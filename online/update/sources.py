"""Where the updater's labelled recent traffic comes from: ClickHouse in production, a list elsewhere.

``ExampleSource`` is the protocol; ``ClickHouseSource`` and ``ListSource`` implement it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from driftline.models.datasets import Example, text_id


class ExampleSource(Protocol):
    """Where labelled recent traffic comes from (ClickHouse in production, a list in the benchmark)."""

    def recent_examples(self, task: str, limit: int, since_ts_ms: int | None = None) -> list[Example]:
        """Up to ``limit`` of the newest labelled examples of ``task``, oldest first.

        ``since_ts_ms``: only feedback that arrived at or after this time (epoch ms).
        """


@dataclass
class ListSource:
    """In-memory feedback (scenario, benchmark, tests); ``add`` records when each label arrived."""

    examples: list[Example] = field(default_factory=list)
    arrived_ms: list[int] = field(default_factory=list)  # parallel to examples where known

    def add(self, example: Example, arrived_ms: int) -> None:
        """Hold one label that arrived at ``arrived_ms``."""
        if len(self.arrived_ms) != len(self.examples):
            raise ValueError("ListSource: add() on a source built without arrival times")
        self.examples.append(example)
        self.arrived_ms.append(int(arrived_ms))

    def recent_examples(self, task: str, limit: int, since_ts_ms: int | None = None) -> list[Example]:
        """The last ``limit`` examples held (that arrived at or after ``since_ts_ms``, if given)."""
        if since_ts_ms is None:
            return self.examples[-limit:]
        if len(self.arrived_ms) != len(self.examples):
            raise ValueError("ListSource: since_ts_ms needs arrival times (build it with add())")
        kept = [e for e, t in zip(self.examples, self.arrived_ms, strict=True) if t >= since_ts_ms]
        return kept[-limit:]


class ClickHouseSource:
    """Newest feedback labels joined with the text of the event they label (``labels.text``).

    ``since_ts_ms``: ignore feedback joined before this time (``UpdaterConfig.feedback_since_ts_ms``).
    """

    def __init__(self, client: Any, since_ts_ms: int | None = None) -> None:
        self.client = client
        self.since_ts_ms = since_ts_ms or 0

    def _since(self, since_ts_ms: int | None) -> int:
        """The later of ``since_ts_ms`` and the source's own lower bound (epoch ms)."""
        return max(self.since_ts_ms, int(since_ts_ms or 0))

    def recent_examples(self, task: str, limit: int, since_ts_ms: int | None = None) -> list[Example]:
        """Up to ``limit`` of the newest joined feedback labels of ``task`` with their texts, oldest first.

        ``since_ts_ms``: only feedback joined at or after it (and after the source's own ``since``).
        """
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
            {"task": task, "limit": int(limit), "since": self._since(since_ts_ms)},
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

    def outcomes(
        self,
        task: str,
        version: int,
        adapter_hash: str,
        limit: int,
        *,
        since_ts_ms: int = 0,
        newest: bool = False,
    ) -> list[bool]:
        """Whether one version was right, per feedback label joined since ``since_ts_ms``, oldest first.

        ``newest``: the last ``limit`` labels instead of the first ``limit``. The source's own
        ``since_ts_ms`` bounds this too: a run that must not learn from earlier runs' labels must not
        judge a version by them either (a previous run's version as the rollback baseline).
        """
        rows = self._version_rows(
            "feedback", "correct", "joined_ts_ms", task, version, adapter_hash, limit, since_ts_ms, newest
        )
        return [bool(correct) for correct, _ in rows]

    def served_probabilities(
        self,
        task: str,
        version: int,
        adapter_hash: str,
        limit: int,
        *,
        since_ts_ms: int = 0,
        newest: bool = False,
    ) -> list[list[float]]:
        """The probabilities one version served, per event it labelled since ``since_ts_ms``, oldest
        first (``newest``: the last ``limit``). What the watch estimates accuracy from, without labels."""
        rows = self._version_rows(
            "labels",
            "probabilities",
            "processed_ts_ms",
            task,
            version,
            adapter_hash,
            limit,
            since_ts_ms,
            newest,
            where="AND length(probabilities) > 0",
        )
        return [list(probabilities) for probabilities, _ in rows]

    def _version_rows(
        self,
        table: str,
        column: str,
        ts: str,
        task: str,
        version: int,
        adapter_hash: str,
        limit: int,
        since_ts_ms: int,
        newest: bool,
        where: str = "",
    ) -> list[tuple[Any, int]]:
        """(``column``, ``ts``) of one version's rows in ``table`` from ``since_ts_ms`` on (and the
        source's own bound), oldest first: the first ``limit``, or with ``newest`` the last ``limit``."""
        order = "DESC" if newest else "ASC"
        rows = self.client.execute(
            f"SELECT {column}, {ts} FROM {table} FINAL WHERE task = %(task)s AND model_version = %(v)s "
            f"AND adapter_hash = %(h)s AND {ts} >= %(since)s {where} "
            f"ORDER BY {ts} {order}, event_id LIMIT %(limit)s",
            {
                "task": task,
                "v": str(version),
                "h": adapter_hash,
                "limit": limit,
                "since": self._since(since_ts_ms),
            },
        )
        return list(reversed(rows)) if newest else rows

    def graded_since(
        self, task: str, model_version: str, since_ts_ms: int, limit: int
    ) -> list[tuple[str, str, bool]]:
        """(text, true label, whether ``model_version`` was right) of the feedback joined since
        ``since_ts_ms`` on events that version labelled, oldest first (the shadow's live evidence)."""
        rows = self.client.execute(
            """
            SELECT event_text, label, correct
            FROM (
                SELECT event_id, label, correct, joined_ts_ms FROM feedback FINAL
                WHERE task = %(task)s AND joined_ts_ms >= %(since)s AND model_version = %(v)s
            )
            ANY INNER JOIN (SELECT event_id, text AS event_text FROM labels FINAL WHERE task = %(task)s)
            USING (event_id)
            ORDER BY joined_ts_ms, event_id
            LIMIT %(limit)s
            """,
            {
                "task": task,
                "since": self._since(since_ts_ms),
                "v": str(model_version),
                "limit": limit,
            },
        )
        return [(text, label, bool(correct)) for text, label, correct in rows if text]

    def shadow_agreement(self, model: str, shadow_version: int) -> tuple[int, int]:
        """(mirrored events, of them where the shadow gave serving's label) of one shadow version."""
        rows = self.client.execute(
            "SELECT count(), countIf(shadow_label = serving_label) FROM shadow_predictions FINAL "
            "WHERE model_name = %(m)s AND shadow_version = %(v)s",
            {"m": model, "v": str(shadow_version)},
        )
        return int(rows[0][0]), int(rows[0][1])
