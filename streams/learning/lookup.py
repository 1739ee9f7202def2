"""Finding predictions in ClickHouse ``labels`` for feedback this worker cannot join from memory.

``labels`` holds every worker's predictions, so it is the join's source of truth; one query per batch.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from typing import Any, Protocol

from driftline.settings import ClickHouseSettings

Key = tuple[str, str]  # (task, event_id)
COLUMNS = ("task", "event_id", "label", "model_version", "adapter_hash", "confidence", "processed_ts_ms")


class PredictionLookup(Protocol):
    """Finds predictions by (task, event_id)."""

    async def find(self, keys: Iterable[Key]) -> dict[Key, dict[str, Any]]:
        """Predictions found for ``keys``, by key."""


class LabelsLookup:
    """``find({(task, event_id)}) -> {key: labels row as dict}`` through clickhouse-driver."""

    def __init__(self, settings: ClickHouseSettings, chunk: int = 1000, table: str = "labels") -> None:
        self._settings = settings
        self.chunk = chunk
        self.table = table
        self._client: Any = None
        self._lock = threading.Lock()  # one query at a time per connection

    def _connect(self) -> Any:
        if self._client is None:
            from driftline.clients import clickhouse_client

            self._client = clickhouse_client(self._settings)
        return self._client

    def _query(self, keys: list[Key]) -> dict[Key, dict[str, Any]]:
        wanted = set(keys)
        found: dict[Key, dict[str, Any]] = {}
        with self._lock:
            client = self._connect()
            for start in range(0, len(keys), self.chunk):
                part = keys[start : start + self.chunk]
                try:
                    rows = client.execute(
                        f"SELECT {', '.join(COLUMNS)} FROM {self.table} "
                        "WHERE task IN %(tasks)s AND event_id IN %(ids)s",
                        {"tasks": tuple({t for t, _ in part}), "ids": tuple({e for _, e in part})},
                    )
                except Exception:
                    client.disconnect()  # never reuse a half-broken connection
                    self._client = None
                    raise
                for row in rows:
                    record = dict(zip(COLUMNS, row, strict=True))
                    key = (record["task"], record["event_id"])
                    if key not in wanted:
                        continue
                    if key not in found or record["processed_ts_ms"] > found[key]["processed_ts_ms"]:
                        found[key] = record
        return found

    async def find(self, keys: Iterable[Key]) -> dict[Key, dict[str, Any]]:
        """Predictions found in ClickHouse for ``keys``, by key."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            return {}
        return await asyncio.to_thread(self._query, unique)
