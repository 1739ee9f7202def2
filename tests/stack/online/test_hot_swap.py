"""Hot swap under load through the real Triton: no failed and no lost requests, new version visible.

Exports a small news_topic artifact twice under a unique model name in the shared repository, drives
steady concurrent traffic through ``TritonClient`` (version=None, i.e. the serving version) while
``TritonSwapper`` swaps 1 -> 2 and back 2 -> 1 (rollback direction), and counts every request.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from driftline.apps.testing.harness import unique_suffix
from driftline.settings import Settings

pytestmark = [pytest.mark.stack, pytest.mark.slow]

TEXTS = [
    "Shares in the bank rose after profits beat forecasts.",
    "The striker scored twice as United won the cup final.",
    "The government announced a new bill on election spending.",
    "The new phone chip doubles battery life, the firm says.",
]


def _small_artifact() -> Path:
    from driftline.models.cache import get_or_train
    from driftline.models.tasks import get_task

    return get_or_train(get_task("news_topic"), limit=16, max_steps=4, progress=False).artifact_dir


async def _drive(task: str, stop: asyncio.Event, log: list[tuple[float, str | None, str]], workers: int = 3):
    from driftline.models.inference.triton import TritonClient

    async with TritonClient(timeout_s=60, retries=3) as client:

        async def worker(i: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                sent = time.monotonic()
                try:
                    [prediction] = await client.predict(task, [TEXTS[(i + n) % len(TEXTS)]])
                    log.append((sent, prediction.model_version, "ok"))
                except Exception as exc:  # counted, asserted to be zero
                    log.append((sent, None, f"{type(exc).__name__}: {exc}"))

        await asyncio.gather(*(worker(i) for i in range(workers)))


async def test_swap_under_load_loses_nothing(settings: Settings) -> None:
    from driftline.models.triton.export import export
    from driftline.online.serving.swap import TritonSwapper

    repo = settings.triton.repository
    name = unique_suffix("swaptest_")
    artifact = await asyncio.to_thread(_small_artifact)
    swapper = TritonSwapper(drain_quiet_s=1.0, drain_timeout_s=5)
    try:
        v1 = export("news_topic", artifact, name=name, repository=repo, promote=True)
        await asyncio.to_thread(swapper._client.load_model, name)
        v2 = export("news_topic", artifact, name=name, repository=repo, promote=False)
        assert (v1, v2) == (1, 2) and swapper.serving_versions(name) == [1]

        stop, log = asyncio.Event(), []
        driver = asyncio.create_task(_drive(name, stop, log))
        await asyncio.sleep(3)
        swap_started = time.monotonic()
        forward = await asyncio.to_thread(swapper.swap, name, v2)
        swap_done = time.monotonic()
        await asyncio.sleep(3)
        back = await asyncio.to_thread(swapper.swap, name, v1)  # rollback direction: lower version
        back_done = time.monotonic()
        await asyncio.sleep(3)
        stop.set()
        await asyncio.wait_for(driver, 120)
        # the repository's config and Triton's live state both say the rollback target serves
        serving_after = swapper.serving_versions(name)
        ready_after = await asyncio.to_thread(swapper._client.is_model_ready, name, "1")
    finally:
        try:
            swapper._client.unload_model(name)
        finally:
            swapper.close()
            shutil.rmtree(repo / name, ignore_errors=True)

    failures = [outcome for _, _, outcome in log if outcome != "ok"]
    assert failures == [], failures[:3]
    assert len(log) > 20
    before = {v for t, v, _ in log if t < swap_started}
    # t is the send time: requests sent after a swap returned must be answered by the new version.
    print(f"requests={len(log)} swap={forward} rollback={back}")
    between = [v for t, v, _ in log if swap_done < t < swap_done + 2.5]
    after = [v for t, v, _ in log if t > back_done]
    assert before == {"1"}
    assert between and set(between) == {"2"}, "new version did not take the traffic"
    assert after and set(after) == {"1"}, "rollback did not take the traffic back"
    assert forward.old_versions == [1] and back.old_versions == [2]
    assert serving_after == [1] and ready_after
