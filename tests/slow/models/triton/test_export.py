"""``export`` without a server: numbered versions with CPU and GPU configs, broken or foreign artifacts
refused, and the local client's empty/overlong results and input normalization.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from driftline.models.artifacts import content_hash, read_meta
from driftline.models.triton.export import (
    CONFIG_FILE,
    GPU_CONFIG_FILE,
    ExportError,
    ServingOptions,
    export,
    read_config,
    serving_versions,
    set_serving_versions,
)


def test_export_writes_numbered_versions_and_configs(news_artifact: Path, tmp_path: Path) -> None:
    options = ServingOptions(max_queue_delay_us=500, preferred_batch_sizes=(4, 64), num_threads=1)
    first = export("news_topic", news_artifact, name="m", repository=tmp_path, options=options)
    second = export(
        "news_topic", news_artifact, name="m", repository=tmp_path, promote=False, options=options
    )
    assert (first, second) == (1, 2)
    model_dir = tmp_path / "m"
    version_dir = model_dir / "2"
    assert {p.name for p in version_dir.iterdir()} >= {
        "model.py", "meta.json", "adapter", "head.safetensors", "model.onnx",
    }  # fmt: skip
    assert "models.triton.backend import TritonPythonModel" in (version_dir / "model.py").read_text()
    assert content_hash(version_dir) == content_hash(news_artifact)
    assert not list(model_dir.glob(".staging*"))
    meta = read_meta(version_dir)
    assert meta.engine in meta.engines and meta.engines[meta.engine]["sentences_per_s"] > 0

    cpu = read_config(model_dir / CONFIG_FILE)
    assert cpu.name == "m" and cpu.backend == "python" and cpu.max_batch_size == 64
    assert cpu.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert list(cpu.dynamic_batching.preferred_batch_size) == [4, 64]
    assert cpu.dynamic_batching.max_queue_delay_microseconds == 500
    parameters = {key: value.string_value for key, value in cpu.parameters.items()}
    assert json.loads(parameters["labels"]) == [
        "business", "entertainment", "politics", "sport", "tech",
    ]  # fmt: skip
    assert parameters["num_threads"] == "1"
    # clients encode as the newest serving version was trained (the small artifact: 64 tokens)
    assert meta.max_length == 64
    assert (parameters["encoder"], parameters["max_length"], parameters["truncation"]) == (
        "minilm",
        "64",
        "head",
    )
    # the wire contract: token ids in, probabilities out (models/inference/base.py)
    assert [(i.name, i.data_type, list(i.dims)) for i in cpu.input] == [
        ("INPUT_IDS", mc.TYPE_INT64, [-1]), ("ATTENTION_MASK", mc.TYPE_INT64, [-1]),
    ]  # fmt: skip
    assert [(o.name, o.data_type, list(o.dims)) for o in cpu.output] == [("PROBS", mc.TYPE_FP32, [-1])]
    # only the serving version is described; each entry names its adapter and engine
    assert json.loads(parameters["versions"]) == {
        "1": {
            "labels": meta.labels,
            "adapter_hash": meta.adapter_hash,
            "engine": read_meta(model_dir / "1").engine,
            "encoder": "minilm",
            "max_length": meta.max_length,
            "normalize_input": meta.normalize_input,
        }
    }
    # promote=False left version 1 serving; the hot-swap helpers move the explicit version list
    assert serving_versions("m", tmp_path) == [1]
    set_serving_versions("m", [1, 2], tmp_path)
    assert serving_versions("m", tmp_path) == [1, 2]
    gpu = read_config(model_dir / GPU_CONFIG_FILE)
    assert list(gpu.version_policy.specific.versions) == [1, 2]
    assert set(json.loads(gpu.parameters["versions"].string_value)) == {"1", "2"}
    with pytest.raises(ExportError, match="missing on disk"):
        set_serving_versions("m", [7], tmp_path)
    assert export("news_topic", news_artifact, name="m", repository=tmp_path, kind="gpu") == 3
    assert serving_versions("m", tmp_path) == [3]
    assert read_config(model_dir / CONFIG_FILE).backend == "onnxruntime"


def test_gpu_config_is_the_native_onnxruntime_backend_on_the_exported_graph(
    news_artifact: Path, tmp_path: Path
) -> None:
    """Production GPU hosts run no Python: Triton's onnxruntime backend serves model.onnx with the
    TensorRT execution provider in fp16, through the same tensor contract as the CPU config."""
    import onnx

    export("news_topic", news_artifact, name="g", repository=tmp_path)
    model_dir = tmp_path / "g"
    gpu = read_config(model_dir / GPU_CONFIG_FILE)
    cpu = read_config(model_dir / CONFIG_FILE)
    assert gpu.backend == "onnxruntime" and gpu.default_model_filename == "model.onnx"
    assert [g.kind for g in gpu.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    (accelerator,) = gpu.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    assert list(gpu.input) == list(cpu.input) and list(gpu.output) == list(cpu.output)
    assert gpu.max_batch_size == cpu.max_batch_size and gpu.parameters == cpu.parameters
    # the graph the backend loads has exactly the config's tensors (names, types, ranks, label count)
    graph = onnx.load(str(model_dir / "1" / gpu.default_model_filename)).graph
    elem = {onnx.TensorProto.INT64: mc.TYPE_INT64, onnx.TensorProto.FLOAT: mc.TYPE_FP32}
    for declared, actual in ((gpu.input, graph.input), (gpu.output, graph.output)):
        assert [d.name for d in declared] == [a.name for a in actual]
        for d, a in zip(declared, actual, strict=True):
            assert elem[a.type.tensor_type.elem_type] == d.data_type
            dims = a.type.tensor_type.shape.dim
            assert len(dims) == 1 + len(d.dims)  # batch dimension first (max_batch_size > 0)
            assert [x.dim_value or -1 for x in dims[1:]] == [x if x > 0 else -1 for x in d.dims]
    # ServingOptions read back from a GPU config say gpu, so an update stays on the GPU
    assert ServingOptions.from_config(gpu).kind == "gpu"


def test_export_rejects_broken_or_foreign_artifacts(news_artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="labels"):
        export("chat_sentiment", news_artifact, repository=tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(news_artifact, broken)
    (broken / "head.safetensors").write_bytes(b"not the trained head")
    with pytest.raises(ExportError, match="adapter_hash"):
        export("news_topic", broken, repository=tmp_path)
    (broken / "head.safetensors").unlink()
    with pytest.raises(ExportError, match=r"missing head\.safetensors"):
        export("news_topic", broken, repository=tmp_path)
    with pytest.raises(ExportError, match="kind"):
        export("news_topic", news_artifact, repository=tmp_path, kind="tpu")
    assert not (tmp_path / "news_topic" / "1").exists()


def test_local_client_defines_empty_and_overlong_results(news_artifact: Path) -> None:
    from driftline.models.inference.local import LocalClient

    async def run():
        async with LocalClient({"news_topic": news_artifact}) as client:
            return await client.predict("news_topic", ["", long_text, "Shares rose"])

    long_text = "Shares in the bank rose after strong quarterly profits. " * 40
    empty, long, short = asyncio.run(run())
    assert empty.label in empty.probabilities and not empty.truncated
    assert abs(sum(empty.probabilities.values()) - 1.0) < 1e-5
    assert long.truncated and not short.truncated
    assert empty.adapter_hash == content_hash(news_artifact) and empty.engine == "torch-fp32"


def test_serving_normalizes_input_exactly_when_the_artifact_says_so(
    news_artifact: Path, tmp_path: Path
) -> None:
    """Look-alike letters, fullwidth forms and zero-width characters cost nothing once normalized."""
    from driftline.models.inference.local import LocalClient
    from driftline.models.text.noise import perturb

    text = "Shares in the bank rose after strong quarterly profits, the chief executive said on Monday."
    noisy = perturb(text, "visual", seed=1)
    assert noisy != text
    gap = {}
    for flag in (False, True):
        folder = tmp_path / f"normalize-{flag}"
        shutil.copytree(news_artifact, folder)
        meta = json.loads((folder / "meta.json").read_text())
        meta["normalize_input"] = flag
        (folder / "meta.json").write_text(json.dumps(meta))

        async def run(folder: Path = folder):
            async with LocalClient({"news_topic": folder}) as client:
                return await client.predict("news_topic", [text, noisy])

        clean, perturbed = asyncio.run(run())
        gap[flag] = max(abs(clean.probabilities[k] - perturbed.probabilities[k]) for k in clean.probabilities)
    assert gap[True] < 1e-5 < gap[False], gap
