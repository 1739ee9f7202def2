"""Label-request status: ``requested`` becomes ``answered`` when feedback came, ``expired`` when none did.

One ``INSERT ... SELECT`` per rule inside ClickHouse, run by a leader-only timer; repeatable and crash-safe.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from driftline.schema.records import LabelRequestRecord

log = logging.getLogger(__name__)

#: how far before the previous pass answered feedback is looked for again (a request row stored
#: after its feedback, e.g. a sink flush or a retried insert, is caught by the next pass)
OVERLAP_MS = 120_000


def _copy_with_status(status: str) -> str:
    """``INSERT ... SELECT`` copying request rows with ``status`` and a later ``updated_ts_ms``."""
    columns = list(LabelRequestRecord.COLUMNS)
    changed = {"status": f"'{status}'", "updated_ts_ms": "greatest(updated_ts_ms + 1, %(now)s)"}
    selected = [changed.get(c, c) for c in columns]
    return (
        f"INSERT INTO label_requests ({', '.join(columns)}) "
        f"SELECT {', '.join(selected)} FROM label_requests FINAL"
    )


ANSWERED_SQL = (
    _copy_with_status("answered") + " WHERE status != 'answered' AND (task, event_id) IN "
    "(SELECT task, event_id FROM feedback WHERE joined_ts_ms >= %(since)s)"
)
EXPIRED_SQL = (
    _copy_with_status("expired")
    + " WHERE task = %(task)s AND status = 'requested' AND requested_ts_ms < %(cutoff)s"
)


class RequestStatus:
    """Moves label requests to ``answered`` and ``expired`` (one pass per ``update`` call)."""

    def __init__(
        self,
        connect: Callable[[], Any],
        expire_after_s: Callable[[str], float],
        tasks: Iterable[str],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._connect_new = connect  # a ClickHouse client with ``execute(sql, params)``
        self._expire_after_s = expire_after_s
        self.tasks = list(tasks)
        self._clock = clock
        self._client: Any = None
        self._lock = threading.Lock()
        self._since_ms: int | None = None  # answered feedback is looked for from here

    def _connect(self) -> Any:
        if self._client is None:
            self._client = self._connect_new()
        return self._client

    def update_now(self) -> None:
        """One pass of both rules, in this thread (raises on a ClickHouse error)."""
        now_ms = int(self._clock() * 1000)
        if self._since_ms is None:
            # first pass: every answer that could still concern a request that is not expired
            self._since_ms = now_ms - int(max(map(self._expire_after_s, self.tasks), default=0) * 1000)
        with self._lock:
            client = self._connect()
            try:
                client.execute(ANSWERED_SQL, {"now": now_ms, "since": max(0, self._since_ms)})
                for task in self.tasks:
                    cutoff = now_ms - int(self._expire_after_s(task) * 1000)
                    client.execute(EXPIRED_SQL, {"now": now_ms, "task": task, "cutoff": max(0, cutoff)})
            except Exception:
                client.disconnect()  # never reuse a half-broken connection
                self._client = None
                raise
        self._since_ms = now_ms - OVERLAP_MS

    async def update(self) -> None:
        """One pass of both rules; a ClickHouse error is logged and the next pass tries again."""
        try:
            await asyncio.to_thread(self.update_now)
        except Exception as exc:
            log.warning(
                "label request status not updated", extra={"error": f"{type(exc).__name__}: {exc}"[:300]}
            )
