"""``LocalClient``: the exported artifact run in-process, through the same runner Triton uses.

It exists so tests and benchmarks can compare Triton against the exact same maths without a
server, and so a developer can classify without the stack. The runner is CPU-bound and
synchronous, so calls go to a single-thread executor: the event loop stays free for Kafka and
other I/O, and one runner never runs two batches at once (torch already parallelises inside).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from driftline.models.inference.base import InferenceClient, ModelNotReadyError, Prediction
from driftline.settings import get_settings


class LocalClient(InferenceClient):
    """Serve tasks from artifact folders (a Triton version folder or a training artifact).

    ``artifacts`` maps a task (model name) to its folder; with ``repository`` instead, a task resolves
    to ``<repository>/<task>/<version>`` (the highest version when ``version`` is None), like Triton.
    Runners are loaded lazily and cached per folder.
    """

    def __init__(
        self,
        artifacts: Mapping[str, str | Path] | None = None,
        *,
        repository: Path | None = None,
        num_threads: int | None = None,
        explain: bool = True,
    ) -> None:
        self._artifacts = {task: Path(path) for task, path in (artifacts or {}).items()}
        self._repository = (
            repository if repository is not None or artifacts else get_settings().triton.repository
        )
        self._num_threads = num_threads
        self._explain = explain
        self._runners: dict[Path, object] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="driftline-local")

    def _resolve(self, task: str, version: str | None) -> tuple[Path, str]:
        if task in self._artifacts and version is None:
            folder = self._artifacts[task]
            return folder, folder.name
        if self._repository is None:
            raise ModelNotReadyError(f"model {task!r} version {version or 'latest'}: no artifact configured")
        model_dir = self._repository / task
        versions = sorted(int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit())
        if version is None:
            # like Triton with version=None: the highest version the config serves (else on disk)
            from driftline.models.export import serving_versions

            serving = [v for v in serving_versions(task, self._repository) if v in versions]
            chosen = str(max(serving or versions)) if versions else None
        else:
            chosen = version
        if chosen is None or not (model_dir / chosen / "meta.json").is_file():
            raise ModelNotReadyError(
                f"model {task!r} version {version or 'latest'} is not available under {model_dir}"
            )
        return model_dir / chosen, chosen

    def _runner(self, folder: Path):
        if folder not in self._runners:
            from driftline.models.serving.runner import ClassifierRunner

            self._runners[folder] = ClassifierRunner(folder, num_threads=self._num_threads)
        return self._runners[folder]

    def _predict_sync(self, task: str, texts: list[str], version: str | None) -> list[Prediction]:
        folder, version_name = self._resolve(task, version)
        runner = self._runner(folder)
        start = time.perf_counter()
        results = runner.predict(texts, explain=self._explain)
        latency_ms = (time.perf_counter() - start) * 1000.0
        return [
            Prediction(
                label=r.label,
                probabilities=dict(zip(runner.labels, r.probabilities, strict=True)),
                explanation=list(r.explanation),
                model_name=task,
                model_version=version_name,
                adapter_hash=r.adapter_hash,
                truncated=r.truncated,
                latency_ms=latency_ms,
            )
            for r in results
        ]

    async def predict(self, task: str, texts: Sequence[str], version: str | None = None) -> list[Prediction]:
        """Predictions for ``texts`` from the task's artifact, run off the event loop."""
        if isinstance(texts, str):
            raise TypeError("predict() takes a sequence of texts, not a single string")
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._predict_sync, task, list(texts), version)

    async def is_ready(self, task: str, version: str | None = None) -> bool:
        """True if the task (version) has an artifact that loads."""
        try:
            folder, _ = self._resolve(task, version)
        except ModelNotReadyError:
            return False
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._runner, folder)
        except Exception:
            return False
        return True

    async def close(self) -> None:
        """Shut the worker threads down."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._runners.clear()
