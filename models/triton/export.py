"""Export a trained artifact into the Triton model repository as the next numbered version.

``export`` writes the version folder, its graphs and engine choice, and the configs whose explicit
version list decides what serves; ``set_serving_versions`` edits it (hot swap: ``online.serving.swap``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from driftline.models.artifacts import (
    ADAPTER_DIR,
    HEAD_FILE,
    META_FILE,
    artifacts_root,
    content_hash,
    read_meta,
)
from driftline.models.tasks import TaskConfig, get_task
from driftline.settings import get_settings

MAX_BATCH_SIZE = 64
CONFIG_FILE = "config.pbtxt"
GPU_CONFIG_FILE = "config.gpu.pbtxt"
ONNX_FILE = "model.onnx"  # the plain fp32 graph the native onnxruntime backend serves on GPU
#: TensorRT through Triton's onnxruntime backend: fp16 kernels, engines cached across restarts
TENSORRT_PARAMETERS = {
    "precision_mode": "FP16",
    "max_workspace_size_bytes": str(1 << 30),
    "trt_engine_cache_enable": "1",
    "trt_engine_cache_path": "/tmp/triton-trt-cache",
}
MODEL_PY = (
    '"""Triton entry point: the implementation is driftline.models.triton.backend."""\n\n'
    "from driftline.models.triton.backend import TritonPythonModel  # noqa: F401\n"
)


class ExportError(RuntimeError):
    """The artifact cannot be exported (missing files, labels differing from the task config)."""


@dataclass(frozen=True)
class ServingOptions:
    """How a model is served: instance kind and count, engine threads, dynamic batching.

    They belong to the served model, not to one export: a new version inherits them from the
    model's current ``config.pbtxt`` (``for_model``) unless the caller says otherwise, so an
    update of a GPU deployment stays on the GPU with the same instances and batching.
    """

    max_queue_delay_us: int
    preferred_batch_sizes: tuple[int, ...]
    instances: int = 1
    num_threads: int = 0
    kind: str = "cpu"

    @classmethod
    def from_env(cls, **overrides: object) -> ServingOptions:
        """Options from the Triton settings (``DRIFTLINE_TRITON__*``), then ``overrides``."""
        triton = get_settings().triton
        values: dict[str, object] = {
            "max_queue_delay_us": triton.max_queue_delay_us,
            "preferred_batch_sizes": tuple(triton.preferred_batch),
            "instances": triton.instances,
            "num_threads": triton.torch_threads,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def from_config(cls, config: mc.ModelConfig) -> ServingOptions:
        """The options a generated ``config.pbtxt`` was written with."""
        group = config.instance_group[0] if config.instance_group else None
        parameters = config.parameters
        return cls(
            max_queue_delay_us=config.dynamic_batching.max_queue_delay_microseconds,
            preferred_batch_sizes=tuple(config.dynamic_batching.preferred_batch_size),
            instances=group.count if group is not None and group.count else 1,
            num_threads=int(parameters["num_threads"].string_value or 0)
            if "num_threads" in parameters
            else 0,
            kind="gpu"
            if config.backend == "onnxruntime"
            or (group is not None and group.kind == mc.ModelInstanceGroup.KIND_GPU)
            else "cpu",
        )

    @classmethod
    def for_model(cls, model_dir: Path, **overrides: object) -> ServingOptions:
        """The serving options of the model in ``model_dir`` (the settings' for a new model), then
        ``overrides`` (``None`` values keep the inherited option)."""
        path = model_dir / CONFIG_FILE
        base = cls.from_config(read_config(path)) if path.is_file() else cls.from_env()
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def build_config(
    name: str,
    task: TaskConfig,
    versions: Sequence[int],
    kind: str | None = None,
    options: ServingOptions | None = None,
    described: Mapping[int, Mapping[str, object]] | None = None,
) -> mc.ModelConfig:
    """The Triton model config for ``task`` served as ``name`` (wire contract: models/inference/base.py).

    ``kind`` overrides ``options.kind``: ``cpu`` is the python backend running each version's chosen
    engine, ``gpu`` Triton's native onnxruntime backend on ``model.onnx`` with the TensorRT execution
    provider in fp16 (CUDA for what TensorRT does not take). ``described`` maps each version to its
    ``versions`` parameter entry (labels, adapter hash, engine; ``describe_versions``).
    """
    options = options or ServingOptions.from_env()
    kind = kind or options.kind
    if kind not in ("cpu", "gpu"):
        raise ExportError(f"kind must be 'cpu' or 'gpu', got {kind!r}")
    bad = [b for b in options.preferred_batch_sizes if not 0 < b <= MAX_BATCH_SIZE]
    if bad:
        raise ExportError(f"preferred batch sizes must be in 1..{MAX_BATCH_SIZE}, got {bad}")
    if kind == "gpu":
        config = mc.ModelConfig(
            name=name, backend="onnxruntime", max_batch_size=MAX_BATCH_SIZE, default_model_filename=ONNX_FILE
        )
        tensorrt = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        for key, value in TENSORRT_PARAMETERS.items():
            tensorrt.parameters[key] = value
    else:
        config = mc.ModelConfig(name=name, backend="python", max_batch_size=MAX_BATCH_SIZE)
    config.version_policy.specific.versions.extend(sorted(set(versions)))
    config.input.add(name="INPUT_IDS", data_type=mc.TYPE_INT64, dims=[-1])
    config.input.add(name="ATTENTION_MASK", data_type=mc.TYPE_INT64, dims=[-1])
    # one config serves every listed version, and a version may have grown its head by accepted
    # labels (online/labels/taxonomy.py): the width is per version, named by its ``versions`` entry
    config.output.add(name="PROBS", data_type=mc.TYPE_FP32, dims=[-1])
    group = mc.ModelInstanceGroup.KIND_GPU if kind == "gpu" else mc.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(kind=group, count=options.instances)
    config.dynamic_batching.preferred_batch_size.extend(sorted(set(options.preferred_batch_sizes)))
    config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    newest = (described or {}).get(max(versions)) if versions else None
    encoding = newest or {}  # the newest version's encoding (what version=None requests get)
    parameters = {
        "labels": json.dumps(list(encoding.get("labels", task.labels)), ensure_ascii=False),
        "task": task.name,
        "encoder": str(encoding.get("encoder", task.encoder)),
        "max_length": str(encoding.get("max_length", task.max_length)),
        "normalize_input": "true" if encoding.get("normalize_input", task.normalize_input) else "false",
        "truncation": task.truncation,
        "num_threads": str(options.num_threads),
        "versions": json.dumps(
            {str(v): dict(described[v]) for v in sorted(set(versions)) if v in described}
            if described
            else {},
            ensure_ascii=False,
            sort_keys=True,
        ),
    }
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return config


def describe_versions(model_dir: Path, versions: Sequence[int]) -> dict[int, dict[str, object]]:
    """The ``versions`` parameter entries of ``versions``: labels, adapter hash and engine of each."""
    described: dict[int, dict[str, object]] = {}
    for version in versions:
        folder = model_dir / str(version)
        if (folder / META_FILE).is_file():
            meta = read_meta(folder)
            described[version] = {
                "labels": list(meta.labels),
                "adapter_hash": meta.adapter_hash,
                "engine": meta.engine,
                # how the version was trained to read text: clients encode with exactly this
                "encoder": meta.encoder,
                "max_length": meta.max_length,
                "normalize_input": meta.normalize_input,
            }
    return described


def read_config(path: Path) -> mc.ModelConfig:
    """Parse a ``config.pbtxt`` into a ``ModelConfig``."""
    return text_format.Parse(path.read_text(encoding="utf-8"), mc.ModelConfig())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_config(path: Path, config: mc.ModelConfig) -> None:
    """Write ``config`` to ``path`` atomically, with the generated-file header."""
    header = (
        "# Generated by `driftline export` (models/triton/export.py); version_policy is managed there too.\n"
    )
    _write_atomic(path, header + text_format.MessageToString(config))


def model_versions(model_dir: Path) -> list[int]:
    """Version folders present on disk, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def serving_versions(name: str, repository: Path | None = None) -> list[int]:
    """The versions config.pbtxt tells Triton to load."""
    path = (repository or get_settings().triton.repository) / name / CONFIG_FILE
    if not path.is_file():
        return []
    return list(read_config(path).version_policy.specific.versions)


def set_serving_versions(name: str, versions: Sequence[int], repository: Path | None = None) -> None:
    """Rewrite the version list of config.pbtxt and config.gpu.pbtxt (then call Triton's load)."""
    model_dir = (repository or get_settings().triton.repository) / name
    missing = sorted(set(versions) - set(model_versions(model_dir)))
    if not versions or missing:
        raise ExportError(
            f"model {name!r}: cannot serve versions {list(versions)}; missing on disk: {missing}"
        )
    described = describe_versions(model_dir, sorted(set(versions)))
    newest = described.get(max(versions), {})
    parameters = {
        "versions": json.dumps(
            {str(v): d for v, d in sorted(described.items())}, ensure_ascii=False, sort_keys=True
        ),
        **{key: str(newest[key]) for key in ("encoder", "max_length") if key in newest},
    }
    if "labels" in newest:
        parameters["labels"] = json.dumps(list(newest["labels"]), ensure_ascii=False)
    if "normalize_input" in newest:
        parameters["normalize_input"] = "true" if newest["normalize_input"] else "false"
    for file in (CONFIG_FILE, GPU_CONFIG_FILE):
        path = model_dir / file
        if path.is_file():
            config = read_config(path)
            del config.version_policy.specific.versions[:]
            config.version_policy.specific.versions.extend(sorted(set(versions)))
            for key, value in parameters.items():
                config.parameters[key].string_value = value
            write_config(path, config)


def latest_artifact(task: str) -> Path:
    """The most recently created artifact of ``task`` under ``$DRIFTLINE_CACHE/artifacts/<task>/``."""
    root = artifacts_root(task)
    candidates = [p for p in root.glob("*") if (p / META_FILE).is_file()] if root.is_dir() else []
    if not candidates:
        raise ExportError(f"no trained artifact for task {task!r} under {root}; run `driftline train {task}`")
    return max(candidates, key=lambda p: (read_meta(p).created_at, p.stat().st_mtime))


def _check_artifact(artifact: Path, task: TaskConfig) -> None:
    for required in (META_FILE, HEAD_FILE, ADAPTER_DIR):
        if not (artifact / required).exists():
            raise ExportError(f"artifact {artifact} is missing {required}")
    meta = read_meta(artifact)
    declared, grown = meta.labels[: len(task.labels)], meta.labels[len(task.labels) :]
    # a head grown by accepted labels keeps the declared ones first, in order, and appends the rest
    if declared != task.labels or len(set(meta.labels)) != len(meta.labels):
        raise ExportError(
            f"artifact {artifact} labels {meta.labels} differ from task {task.name!r} {task.labels}"
            + (f" (labels it adds: {grown})" if grown else "")
        )
    if meta.adapter_hash and meta.adapter_hash != content_hash(artifact):
        raise ExportError(
            f"artifact {artifact}: files do not match meta.json adapter_hash {meta.adapter_hash}"
        )


def export(
    task: str,
    artifact: Path | None = None,
    *,
    kind: str | None = None,
    name: str | None = None,
    repository: Path | None = None,
    promote: bool = True,
    options: ServingOptions | None = None,
    progress: bool = False,
    inherit_engine_from: Path | None = None,
) -> int:
    """Copy ``artifact`` (default: the task's latest) to the next version folder; return its number.

    Serving options (``kind`` included) are inherited from the model's current config unless
    ``options``/``kind`` say otherwise (``ServingOptions.for_model``).
    The version's engines are written and measured before it appears (``progress`` shows that work);
    ``inherit_engine_from``: a version folder with the same encoder and adapter (a head refit's
    parent) whose engine choice carries over unmeasured (``prepare_engines``).
    The version folder is assembled under a hidden temporary name and renamed into place, so Triton
    (or a concurrent export) never sees half-copied weights; a concurrent export that took the same
    number makes this one move on to the next number.
    """
    task_config = get_task(task)
    artifact = Path(artifact) if artifact is not None else latest_artifact(task)
    _check_artifact(artifact, task_config)
    name = name or task
    model_dir = (repository or get_settings().triton.repository) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    options = options or ServingOptions.for_model(model_dir)
    if kind is not None:
        options = replace(options, kind=kind)
    build_config(name, task_config, [1], options=options)  # validate options before copying any weights

    staging = model_dir / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(artifact / ADAPTER_DIR, staging / ADAPTER_DIR)
        shutil.copy2(artifact / HEAD_FILE, staging / HEAD_FILE)
        shutil.copy2(artifact / META_FILE, staging / META_FILE)
        (staging / "model.py").write_text(MODEL_PY, encoding="utf-8")
        from driftline.models.engines.prepare import prepare_engines  # torch/onnx: only when exporting

        # ONNX graphs + the engine chosen by measurement
        prepare_engines(staging, progress=progress, inherit_from=inherit_engine_from)
        version = (model_versions(model_dir) or [0])[-1] + 1
        while True:
            try:
                os.rename(staging, model_dir / str(version))
                break
            except OSError:
                if not (model_dir / str(version)).exists():
                    raise
                version += 1
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    current = serving_versions(name, model_dir.parent)
    versions = [version] if promote or not current else current
    described = describe_versions(model_dir, versions)
    write_config(
        model_dir / CONFIG_FILE,
        build_config(name, task_config, versions, options=options, described=described),
    )
    write_config(
        model_dir / GPU_CONFIG_FILE, build_config(name, task_config, versions, "gpu", options, described)
    )
    return version
