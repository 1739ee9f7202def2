"""Write a classifier version as ONNX graphs: plain fp32 (the serving contract), int8, fused, fused int8.

``model.onnx`` is required and is what Triton's onnxruntime backend serves; the variants feed engine
selection, and one that fails is logged and left out.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.optimizer import optimize_model
from torch import nn

from driftline.models.classifier import Classifier, load_classifier
from driftline.models.engines.base import ATTENTION_MASK, GRAPH_FILES, INPUT_IDS, PROBS
from driftline.models.text.batching import token_batches
from driftline.models.text.codec import TextCodec

log = logging.getLogger(__name__)

OPSET = 17
QUANTIZED_OPS = ["MatMul", "Attention"]
MS_DOMAIN = "com.microsoft"
_TRACE_TEXTS = ["a sentence long enough to have a few tokens to trace", "short"]  # one padded row


class _Probabilities(nn.Module):
    """The classifier with the softmax the serving contract returns."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``PROBS`` for ``INPUT_IDS`` and ``ATTENTION_MASK``."""
        return torch.softmax(self.classifier(input_ids, attention_mask), dim=-1)


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write; renamed onto ``path`` when the block succeeds."""
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class _DropMessage(logging.Filter):
    """Drops records whose message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Silence ``quantize_dynamic``'s root-logger advice to pre-process (we measure the result instead)."""
    hint = _DropMessage("pre-processing before quantization")
    logging.getLogger().addFilter(hint)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(hint)


def check_contract(model: onnx.ModelProto, n_labels: int) -> None:
    """Raise ``ValueError`` unless the graph's inputs and output are the serving contract."""
    int64, float32 = onnx.TensorProto.INT64, onnx.TensorProto.FLOAT
    want = [(INPUT_IDS, int64, 2), (ATTENTION_MASK, int64, 2), (PROBS, float32, 2)]
    have = [
        (v.name, v.type.tensor_type.elem_type, len(v.type.tensor_type.shape.dim))
        for v in [*model.graph.input, *model.graph.output]
    ]
    # the label axis is symbolic ("labels": a version may grow its head, one config serves all
    # versions); a graph with a fixed width must have this model's width
    dim = model.graph.output[0].type.tensor_type.shape.dim[1] if model.graph.output else None
    labels = None if dim is None else (n_labels if dim.dim_param else dim.dim_value)
    if have != want or labels != n_labels:
        raise ValueError(f"graph IO {have} (labels {labels}) is not the contract {want} (labels {n_labels})")


def export_fp32(classifier: Classifier, path: Path) -> onnx.ModelProto:
    """Trace ``classifier`` (softmax included) into ``path``: opset 17, dynamic batch and sequence.

    The traced graph is checked against the contract before it replaces ``path``; returns it.
    """
    classifier.encoder.set_attn_implementation("eager")
    codec = TextCodec.for_encoder(
        classifier.encoder_name, classifier.max_length, normalize_input=classifier.normalize_input
    )
    sample = token_batches(codec, _TRACE_TEXTS, token_budget=1 << 30, max_batch=len(_TRACE_TEXTS))[0]
    dynamic = {
        INPUT_IDS: {0: "batch", 1: "seq"},
        ATTENTION_MASK: {0: "batch", 1: "seq"},
        PROBS: {0: "batch", 1: "labels"},
    }
    with _atomic(path) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter; the graph is checked instead
            torch.onnx.export(
                _Probabilities(classifier).eval(),
                (torch.from_numpy(sample.input_ids), torch.from_numpy(sample.attention_mask)),
                str(tmp),
                input_names=[INPUT_IDS, ATTENTION_MASK],
                output_names=[PROBS],
                dynamic_axes=dynamic,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        model = symbolic_labels(onnx.load(tmp))
        onnx.save(model, str(tmp))
        check_contract(model, len(classifier.labels))
    return model


def symbolic_labels(model: onnx.ModelProto) -> onnx.ModelProto:
    """Name ``PROBS``'s label axis ("labels") instead of fixing it; the tracer and the graph tools
    write the traced width, but one Triton config serves versions of different widths."""
    for output in model.graph.output:
        if output.name == PROBS and len(output.type.tensor_type.shape.dim) == 2:
            output.type.tensor_type.shape.dim[1].dim_param = "labels"  # clears dim_value (a oneof)
    return model


def lighten(model: onnx.ModelProto) -> onnx.TensorProto:
    """Swap the word embedding table for a small stand-in of the same name; returns the real table.

    The quantizer and the fusion optimizer copy and re-serialize the whole model several times (shape
    inference); with the word table in it (250k rows for e5_small, most of the bytes) each copy takes
    seconds. Neither reads the table's rows (embedding lookups are not quantized here), only its
    shape's width, so they work on the light model and :func:`restore` puts the table back. The
    stand-in has one row more than any other 2-D table: the optimizer expects the word table to be
    the largest.
    """
    tables = sorted((t for t in model.graph.initializer if len(t.dims) == 2), key=lambda t: math.prod(t.dims))
    if not tables:
        raise ValueError("the graph has no embedding table")
    table, rows = tables[-1], 1 + max((t.dims[0] for t in tables[:-1]), default=0)
    real = onnx.TensorProto()
    real.CopyFrom(table)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(table.data_type)
    table.CopyFrom(numpy_helper.from_array(np.zeros((rows, table.dims[1]), dtype=dtype), table.name))
    return real


def restore(model: onnx.ModelProto, table: onnx.TensorProto) -> onnx.ModelProto:
    """A copy of the light ``model`` with the real ``table`` back in its slot."""
    full = _copy(model)
    slots = [t for t in full.graph.initializer if t.name == table.name]
    if len(slots) != 1:
        raise RuntimeError(f"the graph lost the embedding table {table.name}")
    slots[0].CopyFrom(table)
    return full


def save_graph(model: onnx.ModelProto, path: Path) -> Path:
    """Write ``model`` to ``path`` atomically."""
    with _atomic(path) as tmp:
        onnx.save(model, tmp)
    return path


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def fuse(light: onnx.ModelProto, num_heads: int, hidden_size: int) -> onnx.ModelProto:
    """The light graph after onnxruntime's BERT fusions (``light`` is left as it was).

    The fused operators (Attention, EmbedLayerNormalization, SkipLayerNormalization ...) are
    onnxruntime's ``com.microsoft`` domain, declared here so the quantizer and every reader accept them.
    """
    optimizer = optimize_model(
        _copy(light), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0
    )
    optimizer.topological_sort()
    model = optimizer.model
    if MS_DOMAIN not in {o.domain for o in model.opset_import}:
        model.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    return model


def quantize(light: onnx.ModelProto) -> onnx.ModelProto:
    """``quantize_dynamic`` of the light graph's matrix products (``light`` is left as it was).

    Weights int8 per output channel, activations quantized per batch at run time (no calibration data).
    """
    with tempfile.TemporaryDirectory(prefix="driftline-quant-") as folder, _quiet_quantizer():
        out = Path(folder) / "quantized.onnx"
        quantize_dynamic(
            _copy(light),
            out,
            weight_type=QuantType.QInt8,
            per_channel=True,  # a scale per output column: per-tensor int8 flipped labels torch kept
            op_types_to_quantize=QUANTIZED_OPS,
            # fused (com.microsoft) operators have no ONNX type inference; their outputs are float
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        return onnx.load(out)


def write_onnx(version_dir: Path, graphs: set[str] | None = None) -> dict[str, Path]:
    """Write the version's graphs next to its artifact; ``{graph: path}`` of those written.

    Graphs are ``fp32`` (``model.onnx``, required: an error propagates), ``int8``, ``fused-fp32`` and
    ``fused-int8`` (each skipped, with a logged warning, when its tool fails); ``graphs`` limits the
    optional ones to those named (default: all).
    """
    version_dir = Path(version_dir)
    classifier = load_classifier(version_dir)
    n_labels, config = len(classifier.labels), classifier.encoder.config
    paths = {graph: version_dir / name for graph, name in GRAPH_FILES.items()}
    light = export_fp32(classifier, paths["fp32"])
    written = {"fp32": paths["fp32"]}
    del classifier  # the graphs below need the memory more
    table = lighten(light)
    fused: list[onnx.ModelProto] = []

    def write(graph: str, model: onnx.ModelProto) -> Path:
        full = symbolic_labels(restore(model, table))
        check_contract(full, n_labels)
        return save_graph(full, paths[graph])

    def fused_fp32() -> Path:
        fused.append(fuse(light, config.num_attention_heads, config.hidden_size))
        return write("fused-fp32", fused[0])

    def fused_int8() -> Path:
        if not fused:
            raise RuntimeError("there is no fused graph to quantize")
        return write("fused-int8", quantize(fused[0]))

    steps = {
        "int8": lambda: write("int8", quantize(light)),
        "fused-fp32": fused_fp32,
        "fused-int8": fused_int8,
    }
    wanted = set(steps) if graphs is None else set(graphs)
    if "fused-int8" in wanted:
        wanted.add("fused-fp32")  # it is quantized from the fused graph
    for graph, step in steps.items():
        if graph not in wanted:
            continue
        try:
            written[graph] = step()
        except Exception as exc:  # a variant is optional: its engines will report it missing
            paths[graph].unlink(missing_ok=True)
            log.warning("%s: no %s graph: %s: %s", version_dir, graph, type(exc).__name__, exc)
    return written
