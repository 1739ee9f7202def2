"""Initial adapters for the demo: get-or-train, export, and make them Triton's serving versions.

Every run starts from the same adapters, hot-swapped in when Triton serves something else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from driftline.apps.demo.options import CHAT_TASK, NEWS_TASK, DemoConfig, TrainPlan

Log = Callable[[str], None]


@dataclass
class ServingModel:
    """What serves a task at the start of a demo run, and where it came from."""

    task: str
    version: int
    adapter_hash: str
    artifact: Path
    reused_training: bool
    exported: bool  # False when Triton already served this exact adapter
    train_seconds: float | None
    test_accuracy: float | None
    train_ids: set[str]


def _train(task_name: str, plan: TrainPlan, exclude: list[str], config: DemoConfig, log: Log):
    from driftline.models.cache import get_or_train, training_data
    from driftline.models.tasks import get_task
    from driftline.settings import get_settings

    task = get_task(task_name)
    what = f"{task_name} (without {', '.join(exclude)})" if exclude else task_name
    log(f"initial adapter {what}: training or reusing the cached one")
    result = get_or_train(
        task,
        exclude=exclude,
        limit=plan.limit_per_class,
        max_steps=plan.max_steps,
        epochs=plan.epochs,
        batch_size=plan.batch_size,
        seed=config.seed,
        progress=True,
        root=(get_settings().cache_dir / config.artifacts_subdir / task_name)
        if config.artifacts_subdir
        else None,
    )
    train, _ = training_data(task, exclude=exclude, limit=plan.limit_per_class, seed=config.seed)
    return result, {e.id for e in train}


def _serve(task: str, artifact: Path, log: Log) -> tuple[int, bool]:
    """Make ``artifact`` the only serving version of ``task``; returns (version, exported).

    The serving version with the same adapter hash is reused; otherwise the artifact is exported as
    a new version, which inherits the engine choice of an earlier version of the same adapter when
    there is one (the engines were measured then: the export takes seconds instead of a minute of
    measuring them again). Either way ``serve_version`` (the one serving operation)
    loads it, retires what served before and records it; registry rows that still say serving for
    other versions (left by an earlier run) are retired too, so a re-run is a fresh story.
    """
    from driftline.models.artifacts import read_meta
    from driftline.models.triton.export import export, model_versions, serving_versions
    from driftline.online.serving.registry import ModelRegistry
    from driftline.online.serving.serve import serve_version
    from driftline.online.serving.swap import TritonSwapper
    from driftline.schema.records import ModelStatus

    wanted = read_meta(artifact).adapter_hash
    swapper = TritonSwapper(log=log)
    try:
        repo = Path(swapper.repository) / task
        metas = {
            v: read_meta(repo / str(v))
            for v in model_versions(repo)
            if (repo / str(v) / "meta.json").is_file()
        }
        same = [v for v, meta in metas.items() if meta.adapter_hash == wanted]
        served = set(serving_versions(task))
        serving = [v for v in same if v in served]
        exported = not serving
        if serving:
            version = max(serving)
        else:
            measured = [v for v in same if metas[v].engines]
            parent = repo / str(max(measured)) if measured else None
            version = export(task, artifact, promote=False, inherit_engine_from=parent)
        registry = ModelRegistry.from_settings()
        serve_version(task, version, swapper, registry, reason="driftline demo: initial adapter")
        for other in registry.list(task):
            if other.status == ModelStatus.SERVING and other.version != version:
                registry.set_status(other, ModelStatus.RETIRED, f"driftline demo reset to version {version}")
        return version, exported
    finally:
        swapper.close()


def prepare_models(config: DemoConfig, log: Log) -> dict[str, ServingModel]:
    """Train or reuse, export if needed, load in Triton, register; one entry per task."""
    from driftline.models.artifacts import read_meta

    # with an open taxonomy the class is not declared at all: nothing to exclude, the task lacks it
    unseen = [] if config.open_taxonomy else [config.new_class]
    plans = {NEWS_TASK: (config.news_train, unseen), CHAT_TASK: (config.chat_train, [])}
    out: dict[str, ServingModel] = {}
    for task, (plan, exclude) in plans.items():
        result, train_ids = _train(task, plan, exclude, config, log)
        meta = read_meta(result.artifact_dir)
        version, exported = _serve(task, result.artifact_dir, log)
        metrics = meta.metrics or {}
        accuracy = metrics.get("accuracy")
        train_seconds = meta.train_config.get("train_seconds") if meta.train_config else None
        out[task] = ServingModel(
            task=task,
            version=version,
            adapter_hash=meta.adapter_hash,
            artifact=result.artifact_dir,
            reused_training=result.reused,
            exported=exported,
            train_seconds=float(train_seconds) if isinstance(train_seconds, int | float) else None,
            test_accuracy=float(accuracy) if isinstance(accuracy, int | float) else None,
            train_ids=train_ids,
        )
        log(
            f"{task}: serving version {version} (adapter {meta.adapter_hash}, "
            f"{'cached' if result.reused else 'trained now'}, "
            f"{'exported' if exported else 'already in Triton'})"
        )
    return out
