"""Exported versions on the live Triton: answers equal the local client's (Chinese, emoji, mixed,
empty and long text), a missing version is a clear error, and the documented hot swap works.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from driftline.clients import triton_client
from driftline.models.artifacts import content_hash, read_meta
from driftline.models.inference.base import ModelNotReadyError
from driftline.models.triton.export import (
    export,
    serving_versions,
    set_serving_versions,
)
from driftline.settings import get_settings
from tests.support.serving_support import (
    exported_model_dir,
    require_triton,
    served_export,
    small_artifact,
    unique_model_name,
)

MIXED_TEXTS = [
    "这部电影真的很好看，我很喜欢",
    "服务太差了，再也不来了 😡",
    "Great phone 📱 but 电池 is weak",
    "😀😀😀",
    "Ölpreis steigt; résumé naïve café",
]


@pytest.fixture(scope="module")
def triton_news(news_artifact: Path):
    """``news_topic``'s tiny artifact exported under a unique name into the served repository, loaded."""
    with served_export("news", news_artifact) as served:
        yield served


async def _both(name: str, texts: list[str], version: str | None = None):
    from driftline.models.inference.local import LocalClient
    from driftline.models.inference.triton import TritonClient

    # one call at a time, so Triton sees exactly the batches LocalClient runs: an int8 engine scales
    # activations per batch tensor, so the same text in another batch may differ in the 3rd decimal
    async with TritonClient(max_concurrency=1) as triton, LocalClient() as local:
        return await triton.predict(name, texts, version), await local.predict(name, texts, version)


async def _remote_only(name: str, texts: list[str], version: str | None):
    from driftline.models.inference.triton import TritonClient

    async with TritonClient(retries=0) as triton:
        return await triton.predict(name, texts, version)


async def _keep_asking(triton, name: str, version: str, stop: asyncio.Event) -> tuple[int, list[str]]:
    answered, failures = 0, []
    while not stop.is_set():
        try:
            await triton.predict(name, ["Rates rise"], version=version)
            answered += 1
        except Exception as exc:
            failures.append(repr(exc))
        await asyncio.sleep(0.1)
    return answered, failures


@pytest.mark.stack
def test_triton_matches_local_client_on_100_texts(triton_news) -> None:
    from driftline.models.datasets import load_dataset

    name, version = triton_news
    texts = [example.text for example in load_dataset("bbc_news").split("test")[:100]]
    remote, local = asyncio.run(_both(name, texts))
    assert len(remote) == len(local) == 100
    assert {p.model_version for p in remote} == {str(version)}
    assert (
        {p.adapter_hash for p in remote}
        == {p.adapter_hash for p in local}
        == {content_hash(small_artifact("news_topic"))}
    )
    assert [p.label for p in remote] == [p.label for p in local]
    worst = max(
        abs(r.probabilities[k] - o.probabilities[k])
        for r, o in zip(remote, local, strict=True)
        for k in r.probabilities
    )
    assert worst < 1e-4, f"Triton and in-process probabilities differ by {worst}"
    assert [r.truncated for r in remote] == [o.truncated for o in local] and any(r.truncated for r in remote)
    engine = read_meta(get_settings().triton.repository / name / str(version)).engine
    assert {r.engine for r in remote} == {o.engine for o in local} == {engine}


@pytest.mark.stack
def test_triton_round_trips_chinese_emoji_mixed_empty_and_long_text(triton_news) -> None:
    name, _ = triton_news
    long_text = "The chancellor announced new taxes in the budget. " * 60
    texts = [*MIXED_TEXTS, "", long_text]
    remote, local = asyncio.run(_both(name, texts))
    assert [p.label for p in remote] == [p.label for p in local]
    empty, long = remote[-2], remote[-1]
    assert not empty.truncated and abs(sum(empty.probabilities.values()) - 1) < 1e-5
    assert long.truncated and not any(p.truncated for p in remote[:-1])


@pytest.mark.stack
def test_missing_version_is_a_clear_error(triton_news) -> None:
    name, version = triton_news
    missing = str(version + 41)
    with pytest.raises(ModelNotReadyError, match=rf"'{name}' version {missing}"):
        asyncio.run(_remote_only(name, ["hello"], missing))
    with pytest.raises(ModelNotReadyError, match="no_such_model"):
        asyncio.run(_remote_only("no_such_model_" + name, ["hello"], None))


@pytest.mark.stack
@pytest.mark.slow
def test_hot_swap_two_versions_then_drop_the_old(news_artifact: Path) -> None:
    """The documented swap: export a candidate, serve both, pin requests by version, drop the old one."""
    from driftline.models.inference.triton import TritonClient

    require_triton()
    name = unique_model_name("swap")

    async def scenario() -> None:
        async with TritonClient(retries=0) as triton:
            old = export("news_topic", news_artifact, name=name)
            await triton.load(name)
            new = export("news_topic", news_artifact, name=name, promote=False)
            assert serving_versions(name) == [old]
            set_serving_versions(name, [old, new])
            # a config change makes Triton reload the model; the old version must keep answering meanwhile
            stop = asyncio.Event()
            traffic = asyncio.create_task(_keep_asking(triton, name, str(old), stop))
            await triton.load(name)
            stop.set()
            answered, failures = await traffic
            assert answered > 0 and failures == [], failures
            assert await triton.is_ready(name, str(old)) and await triton.is_ready(name, str(new))
            pinned = await triton.predict(name, ["Rates rise"], version=str(old))
            default = await triton.predict(name, ["Rates rise"])
            assert (pinned[0].model_version, default[0].model_version) == (str(old), str(new))
            set_serving_versions(name, [new])
            await triton.load(name)
            assert not await triton.is_ready(name, str(old))
            assert (await triton.predict(name, ["Rates rise"]))[0].model_version == str(new)
            with pytest.raises(ModelNotReadyError):
                await triton.predict(name, ["Rates rise"], version=str(old))

    with exported_model_dir(name):
        try:
            asyncio.run(scenario())
        finally:  # never leave a test model loaded on the shared server, even after a failure
            admin = triton_client()
            if admin.is_model_ready(name):
                admin.unload_model(name)
            admin.close()
