"""Turning a refused message into a dead letter: original bytes, reason, and where it came from.

Dead letters keep the original bytes (base64) so the message can be inspected or replayed after a
fix. Payloads above ``max_payload_bytes`` keep only their first bytes plus size and sha256: a 10 MB
junk message must not become a 13 MB dead letter that exceeds the topic's message size and turns
the dead-letter path itself into a failure.
"""

from __future__ import annotations

import base64
import hashlib
import time

from driftline.schema.records import DeadLetterRecord
from driftline.streams.decode import Rejection


def dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    payload: bytes | None,
    rejection: Rejection,
    max_payload_bytes: int,
) -> DeadLetterRecord:
    """A dead-letter record for a refused message (payload cut to ``max_payload_bytes``)."""
    payload = payload or b""
    kept = payload[:max_payload_bytes]
    return DeadLetterRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        received_ts_ms=int(time.time() * 1000),
        reason=f"{rejection.code}: {rejection.detail}"[:2000],
        code=rejection.code,
        error_type=rejection.error_type,
        payload_b64=base64.b64encode(kept).decode("ascii"),
        payload_size=len(payload),
        payload_truncated=len(kept) < len(payload),
        payload_sha256=hashlib.sha256(payload).hexdigest(),
    )
