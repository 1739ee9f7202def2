"""``prepare_engines`` on real artifacts: ONNX graphs keep the serving contract and torch's answers;
the engine chosen is measured, recorded in the meta, and loads in Triton's stub without torch.

Small trained artifacts of both tasks (``serving_support.small_artifact``) are copied into temporary
version folders; the held-out counts are small so the whole file stays within about two minutes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from driftline.models.artifacts import read_meta
from driftline.models.engines import (
    ENGINE_NAMES,
    REFERENCE_ENGINE,
    EngineChoice,
    EngineMeasure,
    choose_engine,
    held_out_examples,
    load_engine,
    prepare_engines,
    write_onnx,
)
from driftline.models.engines.base import GRAPH_FILES, graphs_read_by
from driftline.models.engines.select import run_batches
from driftline.models.text.batching import TokenBatch, token_batches
from driftline.models.text.codec import codec_for
from driftline.settings import get_settings
from tests.support.serving_support import small_artifact

TASKS = ["news_topic", "chat_sentiment"]


SELECTION_TEXTS = 16  # under one batch: the rule is exercised, the file stays quick


MIN_AGREEMENT = 0.97


def _version(task: str, root: Path) -> Path:
    version = root / task / "1"
    shutil.copytree(small_artifact(task), version)
    return version


def _held_out(version: Path, n: int = SELECTION_TEXTS) -> tuple[list[str], list[str]]:
    examples = held_out_examples(read_meta(version).task, n)
    return [e.text for e in examples], [e.label for e in examples]


def _probs(version: Path, engine: str, batches: list[TokenBatch]) -> np.ndarray:
    """``engine``'s probabilities for the texts in ``batches``, in input order."""
    return run_batches(load_engine(version, engine), batches, sum(len(b.rows) for b in batches))


@pytest.fixture(scope="module")
def news_graphs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    version = _version("news_topic", tmp_path_factory.mktemp("graphs"))
    return version, write_onnx(version)


#: candidates per task: every engine for news; for chat (a 12-layer encoder, 4x the graph bytes) one of
#: each kind, so the file stays quick
CANDIDATES = {
    "news_topic": list(ENGINE_NAMES),
    "chat_sentiment": [REFERENCE_ENGINE, "ort-fp32", "ort-fused-int8", "openvino-int8"],
}


@dataclass
class Prepared:
    version: Path
    hash_before: str
    choice: EngineChoice
    gold: list[str]
    batches: list[TokenBatch]
    torch_probs: np.ndarray


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Prepared]:
    """Each task's version after ``prepare_engines`` (auto), its hash from before, torch's answers."""
    root = tmp_path_factory.mktemp("prepared")
    out = {}
    for task in TASKS:
        version = _version(task, root)
        before = read_meta(version).adapter_hash
        choice = prepare_engines(version, engine="auto", engines=CANDIDATES[task], texts=SELECTION_TEXTS)
        texts, gold = _held_out(version)
        batches = token_batches(codec_for(read_meta(version)), texts)  # as the selection and serving encode
        out[task] = Prepared(
            version, before, choice, gold, batches, _probs(version, REFERENCE_ENGINE, batches)
        )
    return out


def test_every_graph_has_the_serving_contract(news_graphs: tuple[Path, dict[str, Path]]) -> None:
    version, written = news_graphs
    n_labels = len(read_meta(version).labels)
    assert set(written) == set(GRAPH_FILES), "a graph variant failed to be written"
    assert not [p.name for p in version.iterdir() if ".tmp-" in p.name], "temporary files left behind"
    model = onnx.load(written["fp32"], load_external_data=False)
    assert {o.domain: o.version for o in model.opset_import}.get("") == 17
    for graph, path in written.items():
        assert path == version / GRAPH_FILES[graph]
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inputs = [
            (i.name, i.type, len(i.shape), all(isinstance(d, str) for d in i.shape))
            for i in session.get_inputs()
        ]
        assert inputs == [
            ("INPUT_IDS", "tensor(int64)", 2, True),  # dynamic batch and sequence
            ("ATTENTION_MASK", "tensor(int64)", 2, True),
        ], graph
        (output,) = session.get_outputs()
        assert (output.name, output.type) == ("PROBS", "tensor(float)"), graph
        assert isinstance(output.shape[0], str), graph
        # the declared label axis is symbolic: one config serves versions with grown heads (the
        # session itself reports the inferred width)
        declared = onnx.load(str(path), load_external_data=False).graph.output[0].type.tensor_type.shape
        assert declared.dim[1].dim_param == "labels", graph
        ids = np.array([[101, 2023, 2003, 102, 0, 0], [101, 2204, 2154, 2000, 2017, 102]], dtype=np.int64)
        probs = session.run(["PROBS"], {"INPUT_IDS": ids, "ATTENTION_MASK": (ids != 0).astype(np.int64)})[0]
        assert probs.shape == (2, n_labels) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4), graph


def test_fused_graph_has_fused_attention(news_graphs: tuple[Path, dict[str, Path]]) -> None:
    _, written = news_graphs
    ops = {node.op_type for node in onnx.load(written["fused-fp32"]).graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= ops
    quantized = {node.op_type for node in onnx.load(written["int8"]).graph.node}
    assert quantized & {"MatMulInteger", "DynamicQuantizeMatMul"}, quantized


def test_padding_does_not_change_the_onnx_probabilities(news_graphs: tuple[Path, dict[str, Path]]) -> None:
    version, _ = news_graphs
    engine = load_engine(version, "ort-fp32")
    ids = np.array([[101, 2023, 2003, 1037, 3231, 102]], dtype=np.int64)
    alone = engine.run(ids, np.ones_like(ids))
    padded = np.concatenate([ids, np.zeros((1, 10), dtype=np.int64)], axis=1)
    mask = (np.arange(padded.shape[1]) < ids.shape[1]).astype(np.int64)[None, :]
    np.testing.assert_allclose(engine.run(padded, mask), alone, atol=1e-5)


@pytest.mark.parametrize("task", TASKS)
def test_chosen_engine_gives_torchs_labels_on_held_out_texts(
    prepared: dict[str, Prepared], task: str
) -> None:
    run = prepared[task]
    choice = run.choice
    assert set(choice.measures) == set(CANDIDATES[task])
    assert choice.measures[REFERENCE_ENGINE].error is None
    torch_labels = run.torch_probs.argmax(axis=1)
    chosen_labels = _probs(run.version, choice.engine, run.batches).argmax(axis=1)
    agreement = float((chosen_labels == torch_labels).mean())
    assert agreement >= MIN_AGREEMENT, (choice.engine, agreement, choice.measures)
    assert choice.measures[choice.engine].agreement == pytest.approx(agreement)
    labels = read_meta(run.version).labels
    accuracy = float(np.mean([labels[i] == g for i, g in zip(chosen_labels, run.gold, strict=True)]))
    assert accuracy >= (choice.measures[REFERENCE_ENGINE].accuracy or 0.0) - 0.005 - 1e-9


@pytest.mark.parametrize("task", TASKS)
def test_ort_fp32_probabilities_match_torch(prepared: dict[str, Prepared], task: str) -> None:
    run = prepared[task]
    np.testing.assert_allclose(_probs(run.version, "ort-fp32", run.batches), run.torch_probs, atol=1e-4)


@pytest.mark.parametrize("task", TASKS)
def test_meta_records_the_choice_and_keeps_the_hash(prepared: dict[str, Prepared], task: str) -> None:
    run = prepared[task]
    meta = read_meta(run.version)
    assert meta.engine == run.choice.engine
    assert meta.adapter_hash == run.hash_before
    assert set(meta.engines) == set(CANDIDATES[task])
    for name, recorded in meta.engines.items():
        assert EngineMeasure.model_validate(recorded) == run.choice.measures[name]
    speeds = [m.sentences_per_s for m in run.choice.measures.values() if m.error is None]
    assert speeds and all(s is not None and s > 0 for s in speeds)
    kept = {p.name for p in run.version.glob("*.onnx")}
    assert kept == {GRAPH_FILES[g] for g in {"fp32", *graphs_read_by(run.choice.engine)}}


def test_a_forced_engine_setting_is_honoured(
    news_graphs: tuple[Path, dict[str, Path]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    version = tmp_path / "news_topic" / "1"
    shutil.copytree(news_graphs[0], version)
    monkeypatch.setenv("DRIFTLINE_TRITON__ENGINE", "ort-fused-int8")
    get_settings.cache_clear()
    try:
        choice = prepare_engines(version, texts=8)
    finally:
        monkeypatch.delenv("DRIFTLINE_TRITON__ENGINE")
        get_settings.cache_clear()
    assert (choice.engine, choice.forced) == ("ort-fused-int8", True)
    assert set(choice.measures) == {REFERENCE_ENGINE, "ort-fused-int8"}
    assert read_meta(version).engine == "ort-fused-int8"
    assert (version / GRAPH_FILES["fused-int8"]).is_file()


def test_a_failing_engine_is_recorded_not_chosen(
    news_graphs: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    version = tmp_path / "1"
    shutil.copytree(news_graphs[0], version)
    (version / GRAPH_FILES["int8"]).unlink()
    texts, gold = _held_out(version, 8)
    choice = choose_engine(version, texts, gold, engines=["ort-int8", "ort-fp32"])
    assert "does not exist" in (choice.measures["ort-int8"].error or "")
    assert choice.engine in {REFERENCE_ENGINE, "ort-fp32"}


def test_a_triton_stub_loads_an_onnxruntime_version_without_torch() -> None:
    """The python backend's stub imports only what its engine needs: importing torch, transformers and
    peft took ~8 s of every model load (each swap's time to serve) on the 2-core target."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import driftline.models.triton.backend\n"
        "from driftline.models.engines.base import load_engine\n"
        "import driftline.models.engines.ort\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the stub imported {out.stdout.strip()}"
