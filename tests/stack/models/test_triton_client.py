"""``TritonClient`` against the live Triton: large batches are split and keep their order, a timeout
is reported, and a missing version names the model and the version.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.models.inference.base import InferenceError, ModelNotReadyError
from driftline.models.inference.local import LocalClient
from driftline.models.inference.triton import TritonClient
from driftline.models.triton.export import ServingOptions
from tests.support.serving_support import (
    decided,
    served_export,
    tie,
)

NEWS_LABELS = ["business", "entertainment", "politics", "sport", "tech"]


@pytest.fixture(scope="module")
def triton_news_fast(news_artifact: Path):
    """The tiny news_topic artifact, unique name, preferred batch 16 so chunks really batch."""
    options = ServingOptions(preferred_batch_sizes=(16, 64), max_queue_delay_us=5000)
    with served_export("clients", news_artifact, options=options) as served:
        yield served


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
