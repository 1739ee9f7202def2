"""Prepare a served version's engines: write its graphs, measure the engines, record the choice.

Called once per new version (export and promotion); the choice lands in the version's ``meta.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from driftline.models.artifacts import read_meta, update_meta
from driftline.models.datasets import Example, load_dataset
from driftline.models.engines.base import AUTO, GRAPH_FILES, graphs_read_by, split_name
from driftline.models.engines.head_patch import HeadPatchError, patch_graph, read_head
from driftline.models.engines.onnx_export import write_onnx
from driftline.models.engines.select import EngineChoice, EngineMeasure, choose_engine
from driftline.models.head_refit import encoder_key
from driftline.models.tasks import get_task
from driftline.settings import get_settings

log = logging.getLogger(__name__)


def held_out_examples(task_name: str, limit: int) -> list[Example]:
    """Up to ``limit`` examples of the task's validation split (else test), labels the task knows.

    Taken in id order: ids are text hashes, so this is a fixed, label-blind sample of the split.
    """
    task = get_task(task_name)
    dataset = load_dataset(task.dataset)
    known = set(task.labels)
    for split in ("validation", "test"):
        examples = sorted((e for e in dataset.split(split) if e.label in known), key=lambda e: e.id)
        if examples:
            return examples[:limit]
    raise ValueError(f"dataset {task.dataset} has no validation or test examples for task {task_name}")


def prepare_engines(
    version_dir: Path,
    *,
    engine: str | None = None,
    engines: Sequence[str] | None = None,
    texts: int | None = None,
    num_threads: int | None = None,
    accuracy_tolerance: float = 0.005,
    min_agreement: float = 0.97,
    keep_graphs: bool = False,
    progress: bool = False,
    inherit_from: Path | None = None,
) -> EngineChoice:
    """Write the graphs, choose the engine (or use ``engine``) and record it in ``meta.json``.

    Defaults come from the settings: ``triton.engine`` (``auto``: by measurement),
    ``triton.engine_selection_texts`` held-out texts, and ``triton.torch_threads`` threads (what one
    served instance gets; 0: each library's default). ``engines`` limits the candidates (default
    ``triton.engine_candidates``, else all; e.g. only those the serving image has libraries for), and
    only their graphs are written. Afterwards only ``model.onnx`` (the serving
    contract) and the chosen engine's graph stay, unless ``keep_graphs``: an e5_small version's four
    graphs take 1.7 GB.

    ``inherit_from``: a prepared version with the same encoder and adapter (this one only has a
    new head: ``models.head_refit``). Its engine choice and measurements carry over and only that
    engine's graphs are written: speed is the encoder's, and the quantization of the encoder's
    weights is identical, so measuring again would only repeat the parent's ranking.
    """
    version_dir = Path(version_dir)
    if inherit_from is not None:
        return _inherit(version_dir, Path(inherit_from))
    triton = get_settings().triton
    engine = engine or triton.engine
    # the candidates: as asked, else the settings' list (unless an engine is forced), else every engine
    engines = list(engines or (triton.engine_candidates if engine == AUTO else [])) or None
    named = [*([] if engine == AUTO else [engine]), *(engines or [])]
    for name in named:
        split_name(name)  # UnknownEngineError now, not after the export
    # only the graphs the named engines read (fp32, the serving contract, is always written)
    needed = set().union(*(graphs_read_by(name) for name in named)) if named else None
    write_onnx(version_dir, needed)
    examples = held_out_examples(read_meta(version_dir).task, texts or triton.engine_selection_texts)
    choice = choose_engine(
        version_dir,
        [e.text for e in examples],
        [e.label for e in examples],
        accuracy_tolerance=accuracy_tolerance,
        min_agreement=min_agreement,
        num_threads=triton.torch_threads if num_threads is None else num_threads,
        engines=engines,
        force=None if engine == AUTO else engine,
        progress=progress,
    )
    update_meta(
        version_dir,
        engine=choice.engine,
        engines={name: measure.model_dump() for name, measure in choice.measures.items()},
    )
    if not keep_graphs:
        prune_graphs(version_dir, choice.engine)
    return choice


def _inherit(version_dir: Path, parent: Path) -> EngineChoice:
    """Give ``version_dir`` the parent's engine's graphs and copy its choice and measurements.

    The graphs are the parent's with the new head swapped in (``head_patch``: no tracing) when the
    encoders are identical and the parent's graphs take the head; otherwise they are exported anew.
    """
    parent_meta = read_meta(parent)
    if not parent_meta.engines:
        raise ValueError(f"{parent} has no engine measurements to inherit")
    graphs = {"fp32", *graphs_read_by(parent_meta.engine)}
    try:
        _patch_heads(version_dir, parent, graphs)
    except (HeadPatchError, OSError) as exc:
        log.info("%s: exporting its graphs (the parent's cannot take the head: %s)", version_dir, exc)
        write_onnx(version_dir, graphs)
    update_meta(version_dir, engine=parent_meta.engine, engines=parent_meta.engines)
    prune_graphs(version_dir, parent_meta.engine)
    measures = {name: EngineMeasure.model_validate(m) for name, m in parent_meta.engines.items()}
    return EngineChoice(engine=parent_meta.engine, measures=measures, texts=0)


def _patch_heads(version_dir: Path, parent: Path, graphs: set[str]) -> None:
    """The parent's ``graphs`` with this version's head; ``HeadPatchError`` unless the encoders match."""
    if encoder_key(version_dir) != encoder_key(parent):
        raise HeadPatchError("the encoder or adapter differs from the parent's")
    weight, bias = read_head(version_dir)
    for graph in sorted(graphs):
        patch_graph(parent / GRAPH_FILES[graph], version_dir / GRAPH_FILES[graph], weight, bias)


def prune_graphs(version_dir: Path, engine: str) -> None:
    """Delete the graph variants ``engine`` does not read; ``model.onnx`` always stays."""
    keep = {"fp32", *graphs_read_by(engine)}
    for graph, name in GRAPH_FILES.items():
        if graph not in keep:
            (Path(version_dir) / name).unlink(missing_ok=True)
