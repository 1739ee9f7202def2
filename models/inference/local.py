"""``LocalClient``: an exported version run in-process, with the engine Triton would run.

Lets tests and benchmarks compare Triton against the exact same maths without a server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from driftline.models.artifacts import META_FILE, read_meta
from driftline.models.inference.base import (
    InferenceClient,
    ModelInfo,
    ModelNotReadyError,
    Prediction,
    VersionInfo,
    classify,
)
from driftline.settings import get_settings


class LocalClient(InferenceClient):
    """Serve tasks from exported version folders (or training artifacts, run with torch).

    ``artifacts`` maps a task (model name) to its folder; with ``repository`` instead, a task resolves
    to ``<repository>/<task>/<version>`` (the highest serving version when ``version`` is None), like
    Triton. Engines are loaded lazily and cached per folder; ``engine`` forces one engine for every
    folder (a training artifact has no ONNX graphs, so it runs ``torch-fp32``).
    """

    def __init__(
        self,
        artifacts: Mapping[str, str | Path] | None = None,
        *,
        repository: Path | None = None,
        num_threads: int | None = None,
        engine: str | None = None,
        token_budget: int | None = None,
        max_batch_size: int = 64,
    ) -> None:
        self._artifacts = {task: Path(path) for task, path in (artifacts or {}).items()}
        self._repository = (
            repository if repository is not None or artifacts else get_settings().triton.repository
        )
        triton = get_settings().triton
        self._num_threads = triton.torch_threads if num_threads is None else num_threads
        self._engine_name = engine
        self.token_budget = triton.token_budget if token_budget is None else token_budget
        self.max_batch_size = max_batch_size
        self._loaded: dict[Path, tuple[ModelInfo, object]] = {}
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
            from driftline.models.triton.export import serving_versions

            serving = [v for v in serving_versions(task, self._repository) if v in versions]
            chosen = str(max(serving or versions)) if versions else None
        else:
            chosen = version
        if chosen is None or not (model_dir / chosen / META_FILE).is_file():
            raise ModelNotReadyError(
                f"model {task!r} version {version or 'latest'} is not available under {model_dir}"
            )
        return model_dir / chosen, chosen

    def _load(self, folder: Path) -> tuple[ModelInfo, object]:
        """The folder's ``ModelInfo`` and engine (loaded once)."""
        if folder not in self._loaded:
            from driftline.models.engines.base import load_engine
            from driftline.models.text.codec import codec_for

            meta = read_meta(folder)
            engine_name = self._engine_name or meta.engine
            info = ModelInfo(
                encoder=meta.encoder,
                max_length=meta.max_length,
                normalize_input=meta.normalize_input,
                truncation=codec_for(meta).truncation,
                labels=list(meta.labels),
                versions={folder.name: VersionInfo(list(meta.labels), meta.adapter_hash, engine_name)},
            )
            self._loaded[folder] = (info, load_engine(folder, engine_name, self._num_threads))
        return self._loaded[folder]

    async def predict(self, task: str, texts: Sequence[str], version: str | None = None) -> list[Prediction]:
        """Predictions for ``texts`` from the task's version folder, run off the event loop."""
        if isinstance(texts, str):
            raise TypeError("predict() takes a sequence of texts, not a single string")
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        folder, version_name = self._resolve(task, version)
        info, engine = await loop.run_in_executor(self._executor, self._load, folder)

        async def run(input_ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, str]:
            probs = await loop.run_in_executor(self._executor, engine.run, input_ids, mask)  # type: ignore[attr-defined]
            return probs, version_name

        return await classify(
            task,
            info,
            info.codec(),
            texts,
            run,
            token_budget=self.token_budget,
            max_batch=self.max_batch_size,
        )

    async def is_ready(self, task: str, version: str | None = None) -> bool:
        """True if the task (version) has a folder whose engine loads."""
        try:
            folder, _ = self._resolve(task, version)
        except ModelNotReadyError:
            return False
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._load, folder)
        except Exception:
            return False
        return True

    async def close(self) -> None:
        """Shut the worker thread down."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._loaded.clear()
