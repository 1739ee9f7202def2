"""Read-only ClickHouse access for the dashboard, off the event loop.

One client per thread of a small pool, ``readonly=2`` and a time limit: a dashboard cannot change data.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from driftline.settings import ClickHouseSettings

QUERY_SETTINGS = {"readonly": 2, "max_execution_time": 20}


class StoreError(RuntimeError):
    """ClickHouse could not answer (message is safe to show: no credentials in it)."""


class ClickHouseStore:
    """Read-only queries on a small thread pool, one clickhouse-driver client per thread."""

    def __init__(self, settings: ClickHouseSettings, workers: int = 4) -> None:
        self.settings = settings
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dashboard-ch")

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            from driftline.clients import clickhouse_client

            client = clickhouse_client(self.settings, client_name="driftline-dashboard")
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def query_sync(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a read-only query in this thread; rows as column -> value dicts (``StoreError``)."""
        try:
            data, columns = self._client().execute(
                sql, params or {}, with_column_types=True, settings=QUERY_SETTINGS
            )
        except Exception as exc:  # driver errors carry server text only, never the password
            raise StoreError(
                f"ClickHouse query failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            ) from exc
        names = [name for name, _ in columns]
        return [dict(zip(names, row, strict=True)) for row in data]

    async def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """``query_sync`` on the pool, awaited from the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.query_sync, sql, params)

    def close(self) -> None:
        """Stop the pool and disconnect every thread's client."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for client in self._clients:
                client.disconnect()
            self._clients.clear()
