"""The stream's input boundary: raw Kafka bytes in, a validated event (or a ``Rejection``) out.

Every way an input can be wrong becomes a ``Rejection`` with a short ``code`` for the dead-letter path, never
an exception that would kill the stream.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time

from pydantic import ValidationError

from driftline.online.labels.join import FeedbackError, check_feedback
from driftline.schema.events import SCHEMAS, FeedbackEvent, InputEvent
from driftline.schema.records import DeadLetterRecord


class Rejection(Exception):
    """An input that cannot be processed; ``code`` is the dead-letter reason class."""

    def __init__(self, code: str, detail: str, error_type: str | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.error_type = error_type or code


def describe(exc: ValidationError) -> str:
    """The first few validation errors as one short line (``field: message; ...``)."""
    parts = []
    for error in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "<event>"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode_event(raw: bytes | None, kind: str, *, max_bytes: int, max_text_chars: int) -> InputEvent:
    """Validate one raw message as an event of ``kind``; raises ``Rejection`` saying why not."""
    if raw is None:
        raise Rejection("empty", "message has no value (tombstone)", "EmptyMessage")
    if len(raw) > max_bytes:
        raise Rejection("too_large", f"{len(raw)} bytes > limit {max_bytes}", "PayloadTooLarge")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejection("invalid_utf8", str(exc)[:300], "UnicodeDecodeError") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Rejection("not_json", str(exc)[:300], "JSONDecodeError") from exc
    except RecursionError as exc:  # "[[[[...": nesting deeper than the interpreter's stack
        raise Rejection("not_json", "JSON nested too deeply", "RecursionError") from exc
    if not isinstance(document, dict):
        raise Rejection("not_object", f"expected a JSON object, got {type(document).__name__}", "TypeError")
    try:
        event = SCHEMAS[kind].model_validate(document)
    except ValidationError as exc:
        raise Rejection("invalid_event", describe(exc), "ValidationError") from exc
    for name, value in event:
        # JSON "\\ud800" escapes decode to lone surrogates: valid str, but not UTF-8 encodable, so
        # Triton and ClickHouse would fail on them (the sink then retries the batch forever)
        if isinstance(value, str) and not _encodable(value):
            raise Rejection("invalid_event", f"{name}: contains a lone UTF-16 surrogate", "UnicodeError")
    if kind in ("news", "chat"):
        length = len(event.text)  # type: ignore[attr-defined]
        if length > max_text_chars:
            raise Rejection("text_too_long", f"{length} chars > limit {max_text_chars}", "TextTooLong")
    if isinstance(event, FeedbackEvent):
        try:
            check_feedback(event)
        except FeedbackError as exc:
            raise Rejection(exc.reason, exc.detail, exc.error_type) from exc
    return event


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
