"""Export writes valid Triton versions; Triton serves them exactly like the in-process client."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from driftline.clients import triton_client
from driftline.models.artifacts import content_hash, read_meta
from driftline.models.explain.gradients import merge_to_words
from driftline.models.inference.base import ModelNotReadyError
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
from driftline.settings import get_settings
from tests.models.serving_support import exported_model_dir, require_triton, small_artifact, unique_model_name

# --- pure logic ------------------------------------------------------------------------------------


def test_merge_to_words_joins_wordpieces_and_skips_special_tokens() -> None:
    text = "Unbelievable goals"
    # [CLS] un ##bel ##ievable goals [SEP]
    word_ids = [None, 0, 0, 0, 1, None]
    offsets = [(0, 0), (0, 2), (2, 5), (5, 12), (13, 18), (0, 0)]
    scores = [0.9, 0.1, 0.1, 0.1, 0.2, 0.9]
    assert merge_to_words(text, word_ids, offsets, scores) == [("Unbelievable", 0.3), ("goals", 0.2)]


def test_merge_to_words_keeps_cjk_pieces_and_folds_bare_metaspace() -> None:
    text = "电影很好看 great"
    # ▁ 电影 很 好看 ▁great  (the bare ▁ overlaps 电影, like XLM-R's tokenizer)
    word_ids = [None, 0, 0, 0, 0, 1, None]
    offsets = [(0, 0), (0, 1), (0, 2), (2, 3), (3, 5), (5, 11), (0, 0)]
    scores = [0.0, 0.05, 0.1, -0.2, 0.4, 0.3, 0.0]
    assert merge_to_words(text, word_ids, offsets, scores, top_k=3) == [
        ("好看", 0.4),
        ("great", 0.3),
        ("电影", 0.15),
    ]


# --- export ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def news_artifact() -> Path:
    return small_artifact("news_topic")


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


# --- through Triton --------------------------------------------------------------------------------

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
    require_triton()
    name = unique_model_name("news")
    client = triton_client()
    with exported_model_dir(name):
        version = export("news_topic", news_artifact, name=name)
        client.load_model(name)
        try:
            yield name, version
        finally:
            client.unload_model(name)
            client.close()


async def _both(name: str, texts: list[str], version: str | None = None):
    from driftline.models.inference.local import LocalClient
    from driftline.models.inference.triton import TritonClient

    # one call at a time, so Triton sees exactly the batches LocalClient runs: an int8 engine scales
    # activations per batch tensor, so the same text in another batch may differ in the 3rd decimal
    async with TritonClient(max_concurrency=1) as triton, LocalClient() as local:
        return await triton.predict(name, texts, version), await local.predict(name, texts, version)


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
