"""Event decoding (streams.decode): valid events decode with text and UTC timestamps; bad input,
oversize input and bad feedback task/label are rejected with a code.
"""

from __future__ import annotations

import json

import pytest

from driftline.schema.events import ChatEvent, NewsEvent
from driftline.streams.decode import Rejection, decode_event
from tests.support.samples import CHAT, NEWS

LIMITS = {"max_bytes": 1 << 20, "max_text_chars": 100_000}


def _reject(raw: bytes, kind: str = "news", **limits: int) -> Rejection:
    with pytest.raises(Rejection) as info:
        decode_event(raw, kind, **{**LIMITS, **limits})
    return info.value


def test_valid_events_decode_with_text_and_utc_timestamps() -> None:
    news = decode_event(json.dumps(NEWS).encode(), "news", **LIMITS)
    assert isinstance(news, NewsEvent) and news.text == "Title\n\nBody"
    assert news.ts_ms() == 1704164645000
    chat = decode_event(json.dumps(CHAT).encode(), "chat", **LIMITS)
    assert isinstance(chat, ChatEvent) and chat.ts_ms() == 1700000000123 and chat.channel == "ch"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"\xff\xfe\x00junk", "invalid_utf8"),
        (b"not json at all", "not_json"),
        (b"[1, 2, 3]", "not_object"),
        (json.dumps({k: v for k, v in NEWS.items() if k != "title"}).encode(), "invalid_event"),
        (json.dumps({**NEWS, "id": 12345}).encode(), "invalid_event"),
        (json.dumps({**NEWS, "timestamp": "yesterday"}).encode(), "invalid_event"),
        (None, "empty"),
    ],
)
def test_bad_inputs_are_rejected_with_a_code(raw: bytes | None, code: str) -> None:
    assert _reject(raw).code == code  # type: ignore[arg-type]


def test_size_limits() -> None:
    big = json.dumps({**NEWS, "body": "x" * (10 << 20)}).encode()
    assert _reject(big).code == "too_large"
    long_text = json.dumps({**NEWS, "body": "y" * 500}).encode()
    assert _reject(long_text, max_text_chars=100).code == "text_too_long"


def test_feedback_task_and_label_are_checked() -> None:
    ok = {"event_id": "e", "task": "news_topic", "label": "sport", "source": "analyst", "timestamp": 1}
    assert decode_event(json.dumps(ok).encode(), "feedback", **LIMITS).label == "sport"  # type: ignore[attr-defined]
    assert _reject(json.dumps({**ok, "task": "weather"}).encode(), "feedback").code == "unknown_task"
    assert _reject(json.dumps({**ok, "label": "cooking"}).encode(), "feedback").code == "unknown_label"
