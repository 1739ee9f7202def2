"""Re-scoring speed against the engine's own: ``rescore_events_per_s_ratio`` of ``promotion_bench``.

One exported version (the task's small test classifier) and one topic of news events of our own.
The engine's raw throughput is ``LocalClient.predict`` over the same texts, already in memory,
in one call; the rescore is ``driftline.streams.services.rescore.rescore_range`` over the same events,
read back from Kafka, decoded, classified with the same client and stored in ClickHouse. Both
run in this process, one after the other, after a warm-up of the engine.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from typing import Any

from driftline.apps.testing.harness import PipelineRun, news_messages, pipeline_artifact
from driftline.models.datasets import load_dataset
from driftline.schema.events import NewsEvent
from driftline.schema.timestamps import now_ms
from driftline.settings import get_settings

TASK = "news_topic"


def measure_rescore(events: int = 2000) -> dict[str, Any]:
    """Rescore events/s, the engine's events/s on the same texts, and their ratio."""
    from driftline.models.inference.local import LocalClient
    from driftline.models.triton.export import export
    from driftline.streams.services.rescore import rescore_range

    repository = get_settings().triton.repository
    name = f"bench_rescore_{os.getpid()}"
    version = export(TASK, pipeline_artifact(TASK), name=name, repository=repository)
    run = PipelineRun(routes={"news": f"{TASK}@{name}", "chat": "-"})
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in run.env().items() if k.startswith("DRIFTLINE_")})
    get_settings.cache_clear()
    try:
        articles = [e.text[:1500] for e in load_dataset("bbc_news").split("test")]
        messages = news_messages((f"{run.suffix}-{i}", articles[i % len(articles)]) for i in range(events))
        texts = [NewsEvent.model_validate_json(value).text for _, value in messages]  # as decoded
        run.create_topics(partitions=4)
        start = now_ms()
        run.produce(run.topics.news, messages)
        end = now_ms() + 1

        async def engine() -> float:
            async with LocalClient(repository=repository) as client:
                await client.predict(name, texts[:64], str(version))  # warm-up
                began = time.perf_counter()
                await client.predict(name, texts, str(version))
                return len(texts) / (time.perf_counter() - began)

        raw = asyncio.run(engine())
        _, counts = asyncio.run(rescore_range(TASK, start, end, version=version))
        return {
            "rescore_events": counts.rescored,
            "rescore_events_per_s": round(counts.events_per_s, 1),
            "engine_events_per_s": round(raw, 1),
            "rescore_events_per_s_ratio": round(counts.events_per_s / raw, 3),
        }
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()
        shutil.rmtree(repository / name, ignore_errors=True)
