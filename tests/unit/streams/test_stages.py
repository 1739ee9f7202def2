"""Inference failures sorted by fault, with a scripted client (no Kafka/Triton): an overloaded or
unready server is backpressure (wait, never dead-letter, never commit), and only an event a ready
model keeps refusing is dead-lettered as ``inference_rejected``."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from driftline.models.inference.base import (
    InferenceClient,
    InferenceError,
    InferenceOverloadedError,
    ModelNotReadyError,
    Prediction,
)
from driftline.settings import PipelineConfig
from driftline.streams.agents import ClassifyAgent
from driftline.streams.checkpoint import Checkpoint
from driftline.streams.metrics import PipelineMetrics
from driftline.streams.routing import Route
from driftline.streams.stages import OVERLOADED, UNAVAILABLE, RawMessage, Stages
from tests.support.samples import CHAT, NEWS
from tests.unit.streams.test_agents import FakeEvent, FakeMessage, FakeTopics

ROUTE = Route(topic="t.news", schema_kind="news", task="news_topic", model="m1")


FAST = {"inference_backoff_s": 0.001, "inference_backoff_max_s": 0.004}


class ScriptedClient(InferenceClient):
    """Answers each call by the script: a queue of errors raised by the next calls (``errors``), plus
    errors of calls holding a text that contains a key (``text_errors``: key -> errors, one used per
    such call, the last one repeated; ``None`` answers normally). Records each call's texts."""

    def __init__(
        self,
        errors: list[BaseException] | None = None,
        text_errors: dict[str, list[BaseException | None]] | None = None,
        *,
        ready: bool = True,
        on_call: Callable[[], None] | None = None,
    ) -> None:
        self.errors = list(errors or [])
        self.text_errors = {text: list(script) for text, script in (text_errors or {}).items()}
        self.ready = ready
        self.on_call = on_call
        self.calls: list[list[str]] = []

    async def predict(self, task: str, texts, version=None) -> list[Prediction]:  # type: ignore[override]
        self.calls.append(list(texts))
        if self.on_call is not None:
            self.on_call()
        if self.errors:
            raise self.errors.pop(0)
        for key, script in self.text_errors.items():
            if script and any(key in text for text in texts):
                error = script.pop(0) if len(script) > 1 else script[0]
                if error is not None:
                    raise error
        return [
            Prediction(label="sport", probabilities={"sport": 0.8, "tech": 0.2}, explanation=[],
                       model_name=task, model_version="1", adapter_hash="h")
            for _ in texts
        ]  # fmt: skip

    async def is_ready(self, task: str, version=None) -> bool:
        return self.ready

    def singles(self, key: str) -> int:
        """Calls of one text containing ``key``."""
        return sum(1 for texts in self.calls if len(texts) == 1 and key in texts[0])


def _news(texts: list[str]) -> list[RawMessage]:
    events = [
        {"id": f"e{i}", "timestamp": 1700000000, "source": "s", "title": text, "body": ""}
        for i, text in enumerate(texts)
    ]
    return [RawMessage("t.news", 0, i, json.dumps(e).encode()) for i, e in enumerate(events)]


def _retries(metrics: PipelineMetrics, cause: str) -> float:
    return metrics.inference_retries.labels("m1", cause)._value.get()  # type: ignore[attr-defined]


def _gauge(metrics: PipelineMetrics) -> float:
    return metrics.inference_backpressure.labels("m1")._value.get()  # type: ignore[attr-defined]


def overloaded() -> InferenceOverloadedError:
    return InferenceOverloadedError("infer for model 'm1' failed after 4 attempt(s) [DEADLINE_EXCEEDED]")


class _FakeConsumer:
    def assignment(self) -> set[str]:
        return {"t.news-0"}


@dataclasses.dataclass
class _FakeApp:
    consumer: Any = dataclasses.field(default_factory=_FakeConsumer)


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


async def test_overload_then_recovery_classifies_everything_and_dead_letters_nothing() -> None:
    metrics = PipelineMetrics()
    seen: list[tuple[str | None, float]] = []
    stages: Stages
    client = ScriptedClient(
        errors=[overloaded() for _ in range(5)] + [TimeoutError("client deadline")],
        on_call=lambda: seen.append(
            (getattr(stages.health.backing_off.get("m1"), "state", None), _gauge(metrics))
        ),
    )
    stages = Stages(PipelineConfig(inference_event_attempts=1, **FAST), client, metrics)
    texts = [f"story {i}" for i in range(8)]
    result = await stages.classify(ROUTE, _news(texts))
    assert [p.event_id for p in result.predictions] == [f"e{i}" for i in range(8)]
    assert result.dead_letters == []
    assert client.calls == [client.calls[0]] * 7 and len(client.calls[0]) == 8  # one batch, waited out
    assert _retries(metrics, "overloaded") == 6 and _retries(metrics, "rejected") == 0
    assert seen[0] == (None, 0) and all(s == (OVERLOADED, 1) for s in seen[1:])  # /health and gauge said so
    assert stages.health.backing_off == {} and _gauge(metrics) == 0  # and stop saying so once it answers


async def test_overload_of_a_single_event_is_not_an_attempt() -> None:
    metrics = PipelineMetrics()
    client = ScriptedClient(errors=[overloaded() for _ in range(4)])
    stages = Stages(PipelineConfig(inference_event_attempts=1, **FAST), client, metrics)
    result = await stages.classify(ROUTE, _news(["alone"]))
    assert [p.event_id for p in result.predictions] == ["e0"] and result.dead_letters == []
    assert len(client.calls) == 5 and _retries(metrics, "overloaded") == 4


async def test_a_poison_event_on_a_ready_server_is_the_only_one_dead_lettered() -> None:
    metrics = PipelineMetrics()
    poison = InferenceError("infer for model 'm1' failed after 1 attempt(s) [INVALID_ARGUMENT]: bad")
    client = ScriptedClient(text_errors={"poison": [poison]})
    stages = Stages(PipelineConfig(inference_event_attempts=3, **FAST), client, metrics)
    texts = ["a", "b", "poison", "c", "d"]
    result = await stages.classify(ROUTE, _news(texts))
    assert [p.event_id for p in result.predictions] == ["e0", "e1", "e3", "e4"]
    (letter,) = result.dead_letters
    assert (letter.code, letter.offset, letter.error_type) == ("inference_rejected", 2, "InferenceError")
    assert "INVALID_ARGUMENT" in letter.reason
    assert client.singles("poison") == 3  # the configured attempts, then given up
    assert len(client.calls[0]) == 5 and len(client.calls) == 1 + 4 + 3
    assert _retries(metrics, "rejected") == 2 and _retries(metrics, "overloaded") == 0
    assert metrics.dead_letters.labels("t.news", "inference_rejected")._value.get() == 1  # type: ignore[attr-defined]


async def test_a_transient_refusal_that_succeeds_on_the_second_attempt_is_not_dead_lettered() -> None:
    metrics = PipelineMetrics()
    hiccup = InferenceError("infer for model 'm1' failed after 1 attempt(s) [INTERNAL]: stub restarted")
    # the batch call fails, the event's first own attempt fails, its second succeeds
    client = ScriptedClient(text_errors={"flaky": [hiccup, hiccup, None]})
    stages = Stages(PipelineConfig(inference_event_attempts=3, **FAST), client, metrics)
    result = await stages.classify(ROUTE, _news(["a", "flaky", "b"]))
    assert [p.event_id for p in result.predictions] == ["e0", "e1", "e2"] and result.dead_letters == []
    assert client.singles("flaky") == 2 and _retries(metrics, "rejected") == 1


async def test_overload_between_single_event_attempts_does_not_use_them_up() -> None:
    metrics = PipelineMetrics()
    refused = InferenceError("[INVALID_ARGUMENT] odd")
    # batch refused; the event's attempt 1 refused; then the server is overloaded 3 times; attempt 2 works
    script: list[BaseException | None] = [refused, refused, overloaded(), overloaded(), overloaded(), None]
    client = ScriptedClient(text_errors={"x": script})
    stages = Stages(PipelineConfig(inference_event_attempts=2, **FAST), client, metrics)
    result = await stages.classify(ROUTE, _news(["x", "y"]))
    assert [p.event_id for p in result.predictions] == ["e0", "e1"] and result.dead_letters == []
    assert _retries(metrics, "overloaded") == 3 and _retries(metrics, "rejected") == 1


async def test_a_failure_while_the_model_is_not_ready_is_waited_out_as_unavailable() -> None:
    metrics = PipelineMetrics()
    errors = [ModelNotReadyError("not loaded")] * 2 + [InferenceError("[INTERNAL] x")] * 10**6
    client = ScriptedClient(errors=errors)
    states: list[str] = []
    client.on_call = lambda: states.extend(b.state for b in stages.health.backing_off.values())
    stages = Stages(PipelineConfig(inference_event_attempts=1, **FAST), client, metrics)
    client.ready = False  # the INTERNAL error comes from a model that is not ready: not the input's fault
    task = asyncio.create_task(stages.classify(ROUTE, _news(["a", "b"])))
    await asyncio.sleep(0.2)
    assert not task.done() and states and set(states) == {UNAVAILABLE}
    client.ready = True
    client.errors.clear()
    result = await task
    assert len(result.predictions) == 2 and result.dead_letters == []
    assert _retries(metrics, "unavailable") >= 3


async def test_a_batch_backing_off_holds_its_offsets_until_it_is_classified() -> None:
    metrics = PipelineMetrics()
    client = ScriptedClient(errors=[overloaded() for _ in range(10**6)])
    stages = Stages(PipelineConfig(**FAST), client, metrics)
    checkpoint = Checkpoint(["t.news"])
    agent = ClassifyAgent(ROUTE, config=PipelineConfig(), stages=stages, topics=FakeTopics(),  # type: ignore[arg-type]
                          checkpoint=checkpoint)  # fmt: skip
    events = [FakeEvent(FakeMessage(m.offset, m.value, topic="t.news")) for m in _news(["a", "b"])]
    task = asyncio.create_task(agent.process(events))
    await asyncio.sleep(0.2)
    assert not task.done(), "the agent blocks: no more input is taken"
    assert checkpoint._gate.min_inflight(("t.news", 0)) == 0, "nothing at or after the batch commits"
    assert not any(checkpoint._gate.is_done(e.message) for e in events)
    client.errors.clear()
    await task
    assert all(checkpoint._gate.is_done(e.message) for e in events)
    assert len(agent.topics.predictions.sent) == 2 and agent.topics.deadletter.sent == []


async def test_health_says_overloaded_backing_off_and_stays_200_while_the_model_is_ready() -> None:
    from driftline.streams.app import build_pipeline

    client = ScriptedClient(errors=[overloaded() for _ in range(10**6)])
    pipeline = build_pipeline(client, config=PipelineConfig(**FAST))
    pipeline = dataclasses.replace(pipeline, app=_FakeApp(), routes=[ROUTE])
    assert pipeline.app.consumer.assignment()
    report = await pipeline.health()
    assert (report["ok"], report["status"], report["checks"]["inference_backoff"]) == (True, "ok", {})

    task = asyncio.create_task(pipeline.stages.classify(ROUTE, _news(["a"])))
    await asyncio.sleep(0.2)
    report = await pipeline.health()
    assert report["ok"] and report["status"] == "degraded"
    backoff = report["checks"]["inference_backoff"]["m1"]
    assert backoff["state"] == "overloaded, backing off" and "DEADLINE_EXCEEDED" in backoff["error"]
    assert backoff["retries"] >= 1
    assert 'driftline_inference_backpressure{task="m1"} 1.0' in pipeline.metrics.render()[0].decode()

    client.ready = False  # and a model that is not ready still fails the check (503), as before
    report = await pipeline.health()
    assert not report["ok"] and report["status"] == "failing"
    client.ready = True
    client.errors.clear()
    await task
    report = await pipeline.health()
    assert report["status"] == "ok" and report["checks"]["inference_backoff"] == {}


def test_faust_buffers_stay_small_and_one_fetch_cannot_overfill_a_paused_one() -> None:
    from driftline.streams.app import build_pipeline

    config = PipelineConfig(stream_buffer_maxsize=100)
    conf = build_pipeline(ScriptedClient(), config=config).app.conf
    assert conf.stream_buffer_maxsize == 100
    # Faust pauses a partition once its buffer holds maxsize / 1.25; a fetch must fit in the rest
    assert conf.broker_max_poll_records <= 100 - int(100 / 1.25)


@pytest.mark.parametrize("attempts", [0, -1])
def test_event_attempts_must_be_positive(attempts: int) -> None:
    with pytest.raises(ValueError):
        PipelineConfig(inference_event_attempts=attempts)


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
