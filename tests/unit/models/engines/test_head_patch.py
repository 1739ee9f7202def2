"""The head swap gives the graph a full export would: checked on small graphs in each head layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from driftline.models.engines.head_patch import HeadPatchError, patch_graph, quantize_columns

HIDDEN, LABELS = 16, 4


def _graph(weight: np.ndarray, bias: np.ndarray, layout: str) -> onnx.ModelProto:
    """INPUT_IDS/ATTENTION_MASK -> features [batch, HIDDEN] -> the head -> softmax PROBS."""
    rng = np.random.default_rng(7)
    features = numpy_helper.from_array(rng.normal(size=(1, HIDDEN)).astype(np.float32), "encoder.proj")
    inits = [features, numpy_helper.from_array(bias, "classifier.head.bias")]
    nodes = [
        helper.make_node("Cast", ["INPUT_IDS"], ["ids"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["ATTENTION_MASK"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["ids", "mask"], ["masked"]),
        helper.make_node("ReduceMean", ["masked"], ["pooled"], keepdims=1),
        helper.make_node("Mul", ["pooled", "encoder.proj"], ["hidden"]),
    ]
    if layout == "gemm":
        inits.append(numpy_helper.from_array(weight, "classifier.head.weight"))
        nodes.append(helper.make_node("Gemm", ["hidden", "classifier.head.weight", "classifier.head.bias"],
                                      ["logits"], transB=1))  # fmt: skip
    else:
        inits.append(
            numpy_helper.from_array(np.ascontiguousarray(weight.T), "classifier.head.weight_Transposed")
        )
        nodes += [
            helper.make_node("MatMul", ["hidden", "classifier.head.weight_Transposed"], ["product"]),
            helper.make_node("Add", ["product", "classifier.head.bias"], ["logits"]),
        ]
    nodes.append(helper.make_node("Softmax", ["logits"], ["PROBS"], axis=-1))
    graph = helper.make_graph(
        nodes,
        "head",
        [
            helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
            for n in ("INPUT_IDS", "ATTENTION_MASK")
        ],
        [helper.make_tensor_value_info("PROBS", TensorProto.FLOAT, ["batch", "labels"])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save(model: onnx.ModelProto, path: Path, *, quantized: bool) -> Path:
    onnx.save(model, path)
    if quantized:
        out = path.with_suffix(".int8.onnx")
        quantize_dynamic(
            path, out, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"]
        )
        return out
    return path


def _run(path: Path) -> np.ndarray:
    ids = np.arange(1, 13, dtype=np.int64).reshape(3, 4)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"INPUT_IDS": ids, "ATTENTION_MASK": np.ones_like(ids)})[0]


@pytest.mark.parametrize(("layout", "quantized"), [("gemm", False), ("matmul", False), ("matmul", True)])
def test_a_swapped_head_answers_as_the_graph_exported_with_it(
    tmp_path: Path, layout: str, quantized: bool
) -> None:
    rng = np.random.default_rng(0)
    old_w, new_w = (rng.normal(size=(LABELS, HIDDEN)).astype(np.float32) for _ in range(2))
    old_b, new_b = (rng.normal(size=LABELS).astype(np.float32) for _ in range(2))
    parent = _save(_graph(old_w, old_b, layout), tmp_path / "parent.onnx", quantized=quantized)
    exported = _save(_graph(new_w, new_b, layout), tmp_path / "exported.onnx", quantized=quantized)
    if quantized:
        names = {t.name for t in onnx.load(parent).graph.initializer}
        assert "classifier.head.weight_Transposed_quantized" in names  # the layout under test

    patched = patch_graph(parent, tmp_path / "patched.onnx", new_w, new_b)

    assert not np.allclose(_run(parent), _run(exported), atol=1e-3)  # the heads really differ
    np.testing.assert_allclose(_run(patched), _run(exported), atol=1e-6)


def test_a_head_of_another_width_or_an_unknown_graph_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(LABELS, HIDDEN)).astype(np.float32), np.zeros(LABELS, np.float32)
    parent = _save(_graph(w, b, "gemm"), tmp_path / "parent.onnx", quantized=False)
    grown = rng.normal(size=(LABELS + 1, HIDDEN)).astype(np.float32)
    with pytest.raises(HeadPatchError, match="cannot take"):
        patch_graph(parent, tmp_path / "out.onnx", grown, np.zeros(LABELS + 1, np.float32))
    headless = _graph(w, b, "gemm")
    for tensor in headless.graph.initializer:
        if tensor.name == "classifier.head.weight":
            tensor.name = "classifier.out.weight"
    onnx.save(headless, tmp_path / "headless.onnx")
    with pytest.raises(HeadPatchError, match="no single recognisable head"):
        patch_graph(tmp_path / "headless.onnx", tmp_path / "out.onnx", w, b)
    assert not (tmp_path / "out.onnx").exists()


def test_int8_columns_are_quantized_as_quantize_dynamic_does() -> None:
    matrix = np.array([[0.5, -2.0, 0.0], [-1.0, 1.0, 0.0]], dtype=np.float32)
    q, scale = quantize_columns(matrix)
    np.testing.assert_allclose(scale, [1.0 / 127, 2.0 / 127, 1.0])  # absmax / 127; an empty column: 1
    assert q.dtype == np.int8 and q.tolist() == [[64, -127, 0], [-127, 64, 0]]
