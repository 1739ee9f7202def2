"""The one timestamp parser, and the conversions between epoch milliseconds and ClickHouse ``DateTime``.

Every boundary parses time with ``parse_timestamp``; ``to_datetime`` gives timezone-aware UTC column values.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

#: ClickHouse ``DateTime`` holds 1970-01-01 .. 2106-02-07; a row outside it fails every insert retry.
MIN_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIMESTAMP = datetime(2106, 1, 1, tzinfo=UTC)

#: Numbers above this are epoch milliseconds, below it epoch seconds (1e11 s is the year 5138).
_MS_THRESHOLD = 1e11


def _in_range(ts: datetime) -> datetime:
    if not MIN_TIMESTAMP <= ts < MAX_TIMESTAMP:
        raise ValueError(f"timestamp {ts.isoformat()} is outside 1970-01-01 .. 2105-12-31")
    return ts


def parse_timestamp(value: Any) -> datetime:
    """ISO 8601 text or epoch seconds/milliseconds -> aware UTC datetime (naive means UTC).

    Raises ``ValueError`` for anything else or a time ClickHouse ``DateTime`` cannot hold.
    """
    if isinstance(value, bool):
        raise ValueError("timestamp must be ISO 8601 text or epoch seconds/milliseconds")
    if isinstance(value, int | float):
        seconds = value / 1000.0 if value > _MS_THRESHOLD else float(value)
        try:
            return _in_range(datetime.fromtimestamp(seconds, tz=UTC))
        except (OverflowError, OSError) as exc:  # 1e400, 10**20: not ValueError, would escape pydantic
            raise ValueError(f"timestamp {value!r} is out of range") from exc
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return _in_range(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
    if isinstance(value, datetime):
        return _in_range(value if value.tzinfo else value.replace(tzinfo=UTC))
    raise ValueError("timestamp must be ISO 8601 text or epoch seconds/milliseconds")


def to_ms(ts: datetime) -> int:
    """Epoch milliseconds of an aware datetime."""
    return int(ts.timestamp() * 1000)


def to_datetime(ms: int) -> datetime:
    """Epoch milliseconds -> the aware UTC datetime a ClickHouse ``DateTime`` column takes."""
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)


def now_ms() -> int:
    """The current time in epoch milliseconds."""
    return int(time.time() * 1000)


_last_tick = [0]


def tick_ms() -> int:
    """Epoch milliseconds, strictly increasing within this process (orders two changes in one ms)."""
    _last_tick[0] = max(now_ms(), _last_tick[0] + 1)
    return _last_tick[0]
