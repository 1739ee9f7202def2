"""Pure-logic tests of the pipeline stages (no Kafka/Triton/ClickHouse; fakes stand in for them)."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from driftline.models.inference.base import InferenceClient, InferenceError, ModelNotReadyError, Prediction
from driftline.schema.events import ChatEvent, NewsEvent
from driftline.settings import PipelineConfig, Settings
from driftline.streams.decode import Rejection, decode_event
from driftline.streams.metrics import PipelineMetrics
from driftline.streams.routing import Route, load_routes
from driftline.streams.sinks.base import BatchingSink
from driftline.streams.stages import RawMessage, Stages

LIMITS = {"max_bytes": 1 << 20, "max_text_chars": 100_000}
NEWS = {"id": "n1", "timestamp": "2024-01-02T03:04:05Z", "source": "bbc", "title": "Title", "body": "Body"}
CHAT = {
    "id": "c1",
    "timestamp": 1700000000123,
    "conversation_id": "k",
    "user": "u",
    "channel": "ch",
    "text": "hi",
}


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


def test_routes_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_ROUTES__NEWS", "news_topic@test_model_x")
    monkeypatch.setenv("DRIFTLINE_ROUTES__CHAT", "-")
    routes = load_routes(Settings())
    assert [(r.topic, r.task, r.model_name) for r in routes] == [
        ("driftline.news.events", "news_topic", "test_model_x")
    ]
    monkeypatch.setenv("DRIFTLINE_ROUTES__NEWS", "no_such_task")
    with pytest.raises(KeyError):
        load_routes(Settings())


# --- batching sink ------------------------------------------------------------------------------


class FlakySink(BatchingSink[int]):
    """Fails the first ``failures`` writes, then stores (records) the rows."""

    name = "flaky"

    def __init__(self, failures: int, **kw: object) -> None:
        super().__init__(backoff_s=0.01, backoff_max_s=0.02, **kw)  # type: ignore[arg-type]
        self.failures = failures
        self.stored: list[list[int]] = []

    async def _write(self, rows: list[int]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("clickhouse down")
        self.stored.append(list(rows))


async def test_sink_flushes_on_size_and_runs_callbacks_only_after_storing() -> None:
    sink = FlakySink(failures=3, max_rows=4, max_age_s=60, metrics=PipelineMetrics())
    acked: list[str] = []
    await sink.add([1, 2], on_stored=lambda: acked.append("a"))
    assert acked == [] and sink.pending == 2
    await sink.add([3, 4], on_stored=lambda: acked.append("b"))  # size bound: flush, retried 3 times
    assert sink.stored == [[1, 2, 3, 4]] and acked == ["a", "b"] and sink.healthy
    assert sink.metrics.sink_retries.labels("flaky")._value.get() == 3  # type: ignore[union-attr]


async def test_sink_time_bound_and_cancel_keeps_rows_unacked() -> None:
    sink = FlakySink(failures=10**6, max_rows=100, max_age_s=0.0)
    acked: list[str] = []
    await sink.add([1], on_stored=lambda: acked.append("x"))
    task = asyncio.create_task(sink.tick())  # time bound reached: flush starts, keeps failing
    await asyncio.sleep(0.1)
    assert not sink.healthy and "clickhouse down" in (sink.last_error or "")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert acked == [] and sink.pending == 1  # nothing acknowledged, rows kept for the next try
    sink.failures = 0
    await sink.flush()
    assert sink.stored == [[1]] and acked == ["x"]


# --- classify stage -----------------------------------------------------------------------------


class FakeClient(InferenceClient):
    """Labels by text length; texts containing 'poison' fail while the model stays ready."""

    def __init__(self, down_calls: int = 0) -> None:
        self.down_calls = down_calls
        self.calls: list[int] = []

    async def predict(self, task: str, texts, version=None):  # type: ignore[override]
        self.calls.append(len(texts))
        if self.down_calls:
            self.down_calls -= 1
            raise ModelNotReadyError("not loaded yet")
        if any("poison" in t for t in texts):
            raise InferenceError("INVALID_ARGUMENT")
        labels = ["negative", "positive"]
        return [
            Prediction(
                label=labels[len(t) % 2],
                probabilities={"negative": 0.3, "positive": 0.7},
                explanation=[("tok", 0.9)],
                model_name=task,
                model_version="7",
                adapter_hash="abc",
            )
            for t in texts
        ]

    async def is_ready(self, task: str, version=None) -> bool:
        return not self.down_calls


def _msg(i: int, value: bytes | None) -> RawMessage:
    return RawMessage(topic="t.chat", partition=i % 2, offset=i, value=value)


async def test_classify_dead_letters_bad_input_and_isolates_poison_events() -> None:
    config = PipelineConfig(inference_backoff_s=0.001)
    client = FakeClient(down_calls=2)
    stages = Stages(config, client, PipelineMetrics())
    route = Route(topic="t.chat", schema_kind="chat", task="chat_sentiment", model="m1")
    good = [json.dumps({**CHAT, "id": f"c{i}", "text": "t" * i}).encode() for i in range(1, 5)]
    poison = json.dumps({**CHAT, "id": "p", "text": "poison pill"}).encode()
    messages = [_msg(i, v) for i, v in enumerate([*good, b"\xff", poison, b'{"id": 1}'])]
    result = await stages.classify(route, messages)
    assert sorted(p.event_id for p in result.predictions) == ["c1", "c2", "c3", "c4"]
    assert {p.model_name for p in result.predictions} == {"m1"} and result.predictions[
        0
    ].task == "chat_sentiment"
    assert result.predictions[1].subject == "ch"  # "tt" -> negative -> counts for its channel
    codes = sorted(d.code for d in result.dead_letters)
    assert codes == ["inference_rejected", "invalid_event", "invalid_utf8"]
    utf8 = next(d for d in result.dead_letters if d.code == "invalid_utf8")
    assert base64.b64decode(utf8.payload_b64) == b"\xff" and (utf8.partition, utf8.offset) == (0, 4)
    # two "not ready" waits, one failed batch of 5, then single-event calls: the poison one 3 times
    assert client.calls == [5, 5, 5, 1, 1, 1, 1, 1, 1, 1]


async def test_dead_letter_payload_of_huge_message_is_cut() -> None:
    config = PipelineConfig(deadletter_payload_bytes=1000)
    stages = Stages(config, FakeClient(), PipelineMetrics())
    route = Route(topic="t.news", schema_kind="news", task="news_topic")
    huge = json.dumps({**NEWS, "body": "z" * (10 << 20)}).encode()
    result = await stages.classify(route, [_msg(0, huge)])
    (letter,) = result.dead_letters
    assert letter.code == "too_large" and letter.payload_size == len(huge) and letter.payload_truncated
    assert len(base64.b64decode(letter.payload_b64)) == 1000


def test_json_logs_carry_extra_fields_and_mask_secret_looking_ones() -> None:
    import logging

    from driftline.logs import JsonFormatter

    record = logging.makeLogRecord(
        {
            "name": "x",
            "levelname": "INFO",
            "msg": "hello %s",
            "args": ("w",),
            "sink": "labels",
            "password": "hunter2",
        }
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "hello w" and line["sink"] == "labels" and line["password"] == "***"
