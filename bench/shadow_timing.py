"""What mirroring costs the worker: ``shadow_cpu_overhead`` of ``promotion_bench``.

One model (the task's small test classifier) serves, and a second version of it is loaded as its
shadow (``models.shadow``). The same number of news events then passes through a fresh worker
twice: once with ``shadow_share`` 0 (no mirroring) and once with 0.1 (a 10 % mirror). The worker
process's CPU seconds (user + system, ``/proc``) from the first event produced until every event's
label is stored, per event, give the ratio. Triton's own CPU for the shadow's inference is not the
worker's and is reported apart (``shadow_mirrored_events``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

from driftline.apps.testing.harness import PipelineRun, clickhouse, news_messages, pipeline_artifact, wait_for
from driftline.models.datasets import load_dataset
from driftline.settings import get_settings

TASK = "news_topic"


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _worker_cpu(name: str, share: float, events: int, log_dir: Path) -> dict[str, float]:
    """One fresh worker on topics of its own: CPU seconds and wall time for ``events`` events."""
    run = PipelineRun(
        routes={"news": f"{TASK}@{name}", "chat": "-"},
        extra_env={"DRIFTLINE_PIPELINE__SHADOW_SHARE": str(share), "DRIFTLINE_PIPELINE__SHADOW_CHECK_S": "1"},
    )
    articles = [e.text[:1500] for e in load_dataset("bbc_news").split("test")]
    messages = news_messages((f"{run.suffix}-{i}", articles[i % len(articles)]) for i in range(events))
    try:
        run.create_topics(partitions=4)  # as the surge tables' changelogs (settings)
        run.start_worker(log_dir)
        run.wait_healthy()
        pid = run.workers[0][0].pid
        time.sleep(3)  # the first shadow check and the model info are done before measuring
        cpu, wall = _cpu_s(pid), time.perf_counter()
        run.produce(run.topics.news, messages)
        db = clickhouse()
        done = wait_for(
            lambda: db.execute(
                "SELECT count() FROM labels FINAL WHERE event_id LIKE %(p)s", {"p": f"{run.suffix}-%"}
            )[0][0] >= events,
            timeout=900,
        )  # fmt: skip
        if not done:
            raise TimeoutError(f"the worker did not label {events} events")
        used, seconds = _cpu_s(pid) - cpu, time.perf_counter() - wall
        mirrored = db.execute(
            "SELECT count() FROM shadow_predictions FINAL WHERE event_id LIKE %(p)s", {"p": f"{run.suffix}-%"}
        )[0][0]
        return {"cpu_s": used, "wall_s": seconds, "mirrored": mirrored}
    finally:
        run.stop()


def measure_shadow(events: int = 1000) -> dict[str, Any]:
    """Worker CPU per event with a 10 % mirror ÷ without (the shadow loaded both times)."""
    import tempfile

    from driftline.models.triton.export import export
    from driftline.models.triton.shadow_model import remove_shadow, shadow_name, write_shadow
    from driftline.online.serving.swap import TritonSwapper

    repository = get_settings().triton.repository
    name = f"bench_shadow_{os.getpid()}"
    swapper = TritonSwapper(ready_timeout_s=120)
    artifact = pipeline_artifact(TASK)
    try:
        export(TASK, artifact, name=name, repository=repository, promote=True)
        swapper._client.load_model(name)
        version = export(TASK, artifact, name=name, repository=repository, promote=False,
                         inherit_engine_from=repository / name / "1")  # fmt: skip
        write_shadow(name, version, repository)
        swapper.load_shadow(name, version)
        with tempfile.TemporaryDirectory() as logs:
            without = _worker_cpu(name, 0.0, events, Path(logs))
            with_mirror = _worker_cpu(name, 0.1, events, Path(logs))
        return {
            "shadow_cpu_overhead": round(with_mirror["cpu_s"] / without["cpu_s"], 3),
            "shadow_worker_cpu_s_without": round(without["cpu_s"], 2),
            "shadow_worker_cpu_s_with_10pct": round(with_mirror["cpu_s"], 2),
            "shadow_wall_s_without": round(without["wall_s"], 1),
            "shadow_wall_s_with_10pct": round(with_mirror["wall_s"], 1),
            "shadow_events": events,
            "shadow_mirrored_events": with_mirror["mirrored"],
        }
    finally:
        for model in (shadow_name(name), name):
            with contextlib.suppress(Exception):
                swapper._client.unload_model(model)
        remove_shadow(name, repository)
        shutil.rmtree(repository / name, ignore_errors=True)
