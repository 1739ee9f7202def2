"""InferenceClient behaviour: batching, timeouts/retries, clear errors, a free event loop."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from tritonclient.utils import InferenceServerException

from driftline.apps.testing.harness import free_ports
from driftline.clients import triton_client
from driftline.models.inference.base import InferenceError, InferenceOverloadedError, ModelNotReadyError
from driftline.models.inference.local import LocalClient
from driftline.models.inference.triton import TritonClient
from driftline.models.triton.export import ServingOptions, export
from tests.models.serving_support import (
    decided,
    exported_model_dir,
    require_triton,
    small_artifact,
    tie,
    unique_model_name,
)

NEWS_LABELS = ["business", "entertainment", "politics", "sport", "tech"]


@pytest.fixture(scope="module")
def news_artifact() -> Path:
    return small_artifact("news_topic")  # minilm loads fastest; CJK through e5 is exercised by the bench


async def test_unreachable_server_retries_with_backoff_then_fails_clearly() -> None:
    url = f"127.0.0.1:{free_ports(1)[0]}"  # nothing listens here
    async with TritonClient(url, timeout_s=1.0, retries=2, backoff_s=0.2) as client:
        start = time.perf_counter()
        with pytest.raises(InferenceError, match=r"3 attempt\(s\)") as info:
            await client.predict("chat_sentiment", ["你好"])
        elapsed = time.perf_counter() - start
    assert isinstance(info.value, InferenceOverloadedError)  # server away: backpressure, not the input
    assert "chat_sentiment" in str(info.value)
    assert elapsed >= 0.2 * 0.5 + 0.4 * 0.5  # two backoff sleeps happened (with jitter >= 0.5x)
    assert not await TritonClient(url, timeout_s=0.5).is_ready("chat_sentiment")


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (InferenceServerException("slow", status="StatusCode.DEADLINE_EXCEEDED"), InferenceOverloadedError),
        (InferenceServerException("busy", status="StatusCode.RESOURCE_EXHAUSTED"), InferenceOverloadedError),
        (InferenceServerException("down", status="StatusCode.UNAVAILABLE"), InferenceOverloadedError),
        (TimeoutError(), InferenceOverloadedError),
        (InferenceServerException("bad input", status="StatusCode.INVALID_ARGUMENT"), InferenceError),
        (InferenceServerException("stub died", status="StatusCode.INTERNAL"), InferenceError),
        (InferenceServerException("Request for unknown model", status="StatusCode.UNAVAILABLE"),
         ModelNotReadyError),
    ],
)  # fmt: skip
async def test_busy_or_slow_server_is_overloaded_other_errors_are_not(
    error: BaseException, raised: type[InferenceError]
) -> None:
    calls = []

    async def failing() -> None:
        calls.append(1)
        raise error

    client = TritonClient("127.0.0.1:1", timeout_s=1.0, retries=2, backoff_s=0.001)
    with pytest.raises(InferenceError) as info:
        await client._call("infer", "m", None, failing)
    assert type(info.value) is raised
    transient = raised is InferenceOverloadedError
    assert len(calls) == (3 if transient else 1)  # only busy/slow/away is retried by the client itself


def test_client_timeout_and_retries_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from driftline.settings import get_settings

    monkeypatch.setenv("DRIFTLINE_TRITON__CLIENT_TIMEOUT_S", "0.75")
    monkeypatch.setenv("DRIFTLINE_TRITON__CLIENT_RETRIES", "1")
    get_settings.cache_clear()
    try:
        client = TritonClient("127.0.0.1:1")
        assert (client.timeout_s, client.retries) == (0.75, 1)
        assert TritonClient("127.0.0.1:1", timeout_s=5, retries=0).timeout_s == 5
    finally:
        get_settings.cache_clear()


async def test_local_client_keeps_the_event_loop_free(news_artifact: Path) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async with LocalClient({"news_topic": news_artifact}) as client:
        assert await client.is_ready("news_topic")
        assert not await client.is_ready("no_such_task")
        task = asyncio.create_task(ticker())
        start = time.perf_counter()
        predictions = await client.predict("news_topic", ["这部电影真的很好看 great film"] * 48)
        elapsed = time.perf_counter() - start
        task.cancel()
        with pytest.raises(ModelNotReadyError, match="no_such_task"):
            await client.predict("no_such_task", ["x"])
    assert len(predictions) == 48 and {p.label for p in predictions} <= {
        "business",
        "entertainment",
        "politics",
        "sport",
        "tech",
    }
    assert predictions[0].model_version == news_artifact.name
    # the loop kept ticking while the model ran (at least a third of the ideal tick count)
    assert ticks >= elapsed / 0.01 / 3, (ticks, elapsed)


@pytest.fixture(scope="module")
def triton_news_fast(news_artifact: Path):
    """The tiny news_topic artifact, unique name, preferred batch 16 so chunks really batch."""
    require_triton()
    name = unique_model_name("clients")
    client = triton_client()
    options = ServingOptions(preferred_batch_sizes=(16, 64), max_queue_delay_us=5000)
    with exported_model_dir(name):
        version = export("news_topic", news_artifact, name=name, options=options)
        client.load_model(name)
        try:
            yield name, version
        finally:
            client.unload_model(name)
            client.close()


@pytest.mark.stack
async def test_triton_client_splits_large_batches_and_keeps_order(triton_news_fast) -> None:
    name, version = triton_news_fast
    texts = [
        f"Item {i}: {'shares fell' if i % 2 else 'the striker scored'} 第{i}条 {i}" for i in range(150)
    ]  # more than one call of <= 64 rows and <= 512 tokens
    async with TritonClient(max_batch_size=64, token_budget=512) as triton, LocalClient() as local:
        assert await triton.is_ready(name) and await triton.is_ready(name, str(version))
        remote = await triton.predict(name, texts)
        expected = await local.predict(name, texts)
        info = await triton.model_info(name)
    assert len(remote) == 150
    # the same answers, in order: the same probabilities, and the same label wherever it is not a tie
    # (a 4-step model has near-ties, and Triton batched these texts otherwise than the local client)
    engine = info.version(str(version)).engine
    for got, want in zip(remote, expected, strict=True):
        assert max(abs(got.probabilities[k] - v) for k, v in want.probabilities.items()) < tie(engine), got
        assert got.label == want.label or not decided(want.probabilities, engine), (got, want)
    assert sum(decided(p.probabilities, engine) for p in expected) >= 30  # labels are compared on these
    assert all(p.model_version == str(version) and p.model_name == name for p in remote)
    assert all(p.explanation == [] for p in remote)  # explanations are the explainer's job, not serving's
    assert info.version(str(version)).labels == NEWS_LABELS == list(remote[0].probabilities)
    assert engine and {p.engine for p in remote} == {p.engine for p in expected} == {engine}


@pytest.mark.stack
async def test_triton_client_timeout_is_reported(triton_news_fast) -> None:
    name, _ = triton_news_fast
    texts = ["很长的评论 " * 40] * 64
    async with TritonClient(timeout_s=0.001, retries=1, backoff_s=0.01) as triton:
        with pytest.raises(InferenceError, match=r"DEADLINE_EXCEEDED|timed out"):
            await triton.predict(name, texts)


@pytest.mark.stack
async def test_triton_client_missing_version_names_model_and_version(triton_news_fast) -> None:
    name, version = triton_news_fast
    async with TritonClient() as triton:
        assert not await triton.is_ready(name, str(version + 5))
        with pytest.raises(ModelNotReadyError, match=rf"model '{name}' version {version + 5}"):
            await triton.predict(name, ["你好"], version=str(version + 5))
