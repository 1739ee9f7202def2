"""Event schemas and the one function that turns raw Kafka bytes into a validated event.

Workers consume raw bytes (``value_serializer='raw'``) and decode here, so every way an input can be
wrong - too big, not UTF-8, not JSON, not an object, missing or mistyped fields, an unknown task -
becomes a ``Rejection`` with a short ``code`` that the dead-letter path records, instead of an
exception inside Faust's codec that would kill the stream. Models are strict about types (no
silent ``123 -> "123"``) because a producer sending the wrong type is a bug worth seeing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, ValidationError

from driftline.models.tasks import load_tasks

EventKind = Literal["news", "chat", "feedback"]


class Rejection(Exception):
    """An input that cannot be processed; ``code`` is the dead-letter reason class."""

    def __init__(self, code: str, detail: str, error_type: str | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.error_type = error_type or code


def _timestamp(value: Any) -> datetime:
    """ISO 8601 text or epoch seconds/milliseconds -> aware UTC datetime (naive ISO means UTC)."""
    if isinstance(value, bool):
        raise ValueError("timestamp must be ISO 8601 text or epoch seconds/milliseconds")
    if isinstance(value, int | float):
        seconds = value / 1000.0 if value > 1e11 else float(value)
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


#: ClickHouse ``DateTime`` holds 1970-01-01 .. 2106-02-07; a row outside it fails every insert retry.
_MIN_TS = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_TS = datetime(2106, 1, 1, tzinfo=UTC)


def _in_range(ts: datetime) -> datetime:
    if not _MIN_TS <= ts < _MAX_TS:
        raise ValueError(f"timestamp {ts.isoformat()} is outside 1970-01-01 .. 2105-12-31")
    return ts


Timestamp = Annotated[datetime, BeforeValidator(_timestamp)]
Id = Annotated[StrictStr, Field(min_length=1, max_length=256)]
Name = Annotated[StrictStr, Field(max_length=256)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def ts_ms(self) -> int:
        return int(self.timestamp.timestamp() * 1000)  # type: ignore[attr-defined]


class NewsEvent(_Event):
    id: Id
    timestamp: Timestamp
    source: Name
    title: StrictStr
    body: StrictStr
    language: Name = "en"
    url: StrictStr | None = None
    author: Name | None = None

    @property
    def text(self) -> str:
        return f"{self.title}\n\n{self.body}" if self.title else self.body

    @property
    def channel(self) -> str:
        return self.source


class ChatEvent(_Event):
    id: Id
    timestamp: Timestamp
    conversation_id: Id
    user: Name
    channel: Name
    text: StrictStr
    language: Name = "zh"

    @property
    def source(self) -> str:
        return self.user


class FeedbackEvent(_Event):
    event_id: Id
    task: Name
    label: Name
    source: Name
    timestamp: Timestamp


SCHEMAS: dict[str, type[_Event]] = {"news": NewsEvent, "chat": ChatEvent, "feedback": FeedbackEvent}


def _describe(exc: ValidationError) -> str:
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


def decode_event(raw: bytes | None, kind: str, *, max_bytes: int, max_text_chars: int) -> _Event:
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
        raise Rejection("invalid_event", _describe(exc), "ValidationError") from exc
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
        tasks = load_tasks()
        if event.task not in tasks:
            raise Rejection(
                "unknown_task", f"task {event.task!r} is not one of {sorted(tasks)}", "UnknownTask"
            )
        if event.label not in tasks[event.task].labels:
            raise Rejection(
                "unknown_label",
                f"label {event.label!r} is not one of {tasks[event.task].labels} for task {event.task!r}",
                "UnknownLabel",
            )
    return event


class PredictionRecord(BaseModel):
    """What the predictions topic carries: one classified event with full provenance."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    event_id: str
    task: str
    event_kind: str  # the route's schema: news | chat
    subject: str  # alert grouping key: the news label, or the chat channel
    topic: str
    partition: int
    offset: int
    event_ts_ms: int
    processed_ts_ms: int
    text: str
    source: str
    channel: str
    language: str
    label: str
    confidence: float
    label_names: list[str]
    probabilities: list[float]
    explanation: list[tuple[str, float]]
    model_name: str
    model_version: str
    adapter_hash: str
    truncated: bool
    latency_ms: float


class AlertRecord(BaseModel):
    """What the alerts topic carries; ``evidence`` is free-form JSON (counts, baseline, samples)."""

    alert_id: str
    kind: str
    task: str
    created_ts_ms: int
    severity: str = "warning"
    subject: str
    message: str
    evidence: dict[str, Any] = Field(default_factory=dict)


class DeadLetterRecord(BaseModel):
    """What the dead-letter topic carries: the original bytes and why they were refused."""

    topic: str
    partition: int
    offset: int
    received_ts_ms: int
    reason: str  # "<code>: <detail>"
    code: str
    error_type: str
    payload_b64: str  # the original bytes, cut to the configured limit when larger
    payload_size: int  # size of the original payload
    payload_truncated: bool = False
    payload_sha256: str = ""
