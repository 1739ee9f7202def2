"""``LocalClient`` on a small artifact: predictions keep the event loop free; an unknown task is not ready."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from driftline.models.inference.base import ModelNotReadyError
from driftline.models.inference.local import LocalClient


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
