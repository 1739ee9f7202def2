"""A sink for tests: fails, refuses or stores rows as told (no ClickHouse)."""

from __future__ import annotations

from typing import Any

from driftline.streams.metrics import PipelineMetrics
from driftline.streams.sinks.base import BatchingSink, StoreRefused


class PickySink(BatchingSink[int]):
    """Fails the first ``transient`` writes, refuses any batch holding a row of ``bad``, else stores."""

    name = "picky"

    def __init__(self, bad: set[int], transient: int = 0, every_other: bool = False, **kw: Any) -> None:
        kw.setdefault("metrics", PipelineMetrics())
        super().__init__(max_rows=1000, max_age_s=60, backoff_s=0.001, backoff_max_s=0.002, **kw)
        self.bad, self.transient, self.every_other = bad, transient, every_other
        self.stored: list[int] = []
        self.writes = 0

    async def _write(self, rows: list[int]) -> None:
        self.writes += 1
        if self.transient or (self.every_other and self.writes % 2):
            self.transient = max(0, self.transient - 1)
            raise ConnectionError("clickhouse down")
        refused = sorted(self.bad.intersection(rows))
        if refused:
            raise StoreRefused(f"cannot parse value {refused[0]}", "CANNOT_PARSE_TEXT")
        self.stored.extend(rows)
