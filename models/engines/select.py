"""Choose a version's inference engine by measurement: the fastest that keeps torch's accuracy.

:func:`pick_engine` applies the rule to per-engine measurements on held-out texts, per version, because
quantized graphs are not equally accurate for every model.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from driftline.models.artifacts import read_meta
from driftline.models.engines.base import (
    ENGINE_NAMES,
    REFERENCE_ENGINE,
    Engine,
    EngineUnavailableError,
    load_engine,
    split_name,
)
from driftline.models.engines.torch_engine import TorchEngine
from driftline.models.text.batching import TokenBatch, token_batches
from driftline.models.text.codec import codec_for
from driftline.settings import get_settings

TIMED_PASSES = 2
_EPSILON = 1e-9  # accuracies are ratios of small counts: compare them with a little slack
_ERROR_CHARS = 500


class EngineMeasure(BaseModel):
    """What one engine did on the held-out texts (``error`` set and the rest empty when it failed)."""

    sentences_per_s: float | None = None
    accuracy: float | None = None
    agreement: float | None = None  # share of texts given the same label as torch-fp32
    max_prob_diff: float | None = None  # largest |probability - torch-fp32's|
    error: str | None = None


class EngineChoice(BaseModel):
    """The engine chosen for a version and the measurements it was chosen by."""

    engine: str
    measures: dict[str, EngineMeasure]
    texts: int
    forced: bool = False  # named by the caller (the ``triton.engine`` setting), not picked by the rule


def qualifies(
    measure: EngineMeasure, reference: EngineMeasure, *, accuracy_tolerance: float, min_agreement: float
) -> bool:
    """The engine ran, kept torch's accuracy within ``accuracy_tolerance`` and agreed often enough."""
    if (
        measure.error is not None
        or measure.accuracy is None
        or measure.agreement is None
        or measure.sentences_per_s is None
        or reference.accuracy is None
    ):
        return False
    return (
        measure.accuracy >= reference.accuracy - accuracy_tolerance - _EPSILON
        and measure.agreement >= min_agreement - _EPSILON
    )


def pick_engine(
    measures: Mapping[str, EngineMeasure], *, accuracy_tolerance: float = 0.005, min_agreement: float = 0.97
) -> str:
    """The fastest qualifying engine of ``measures``; ``torch-fp32`` when none qualifies."""
    reference = measures.get(REFERENCE_ENGINE)
    if reference is None or reference.error is not None:
        raise ValueError(f"the reference engine {REFERENCE_ENGINE} has no measurement to compare against")
    fit = {
        name: measure.sentences_per_s or 0.0
        for name, measure in measures.items()
        if qualifies(measure, reference, accuracy_tolerance=accuracy_tolerance, min_agreement=min_agreement)
    }
    return max(fit, key=lambda name: fit[name]) if fit else REFERENCE_ENGINE


def run_batches(engine: Engine, batches: Sequence[TokenBatch], n_texts: int) -> np.ndarray:
    """The engine's probabilities for every text, in input order."""
    out: np.ndarray | None = None
    for batch in batches:
        probs = np.asarray(engine.run(batch.input_ids, batch.attention_mask))
        if probs.ndim != 2 or probs.shape[0] != len(batch.rows):
            raise ValueError(f"{engine.name} returned shape {probs.shape} for a batch of {len(batch.rows)}")
        if out is None:
            out = np.zeros((n_texts, probs.shape[1]), dtype=np.float32)
        out[batch.rows] = probs
    if out is None or not np.isfinite(out).all():
        raise ValueError(f"{engine.name} returned no or non-finite probabilities")
    return out


def time_engine(engine: Engine, batches: Sequence[TokenBatch], n_texts: int) -> tuple[np.ndarray, float]:
    """(probabilities, best sentences/s of the timed passes) after a warm-up on the extreme batches."""
    for batch in {id(b): b for b in (batches[0], batches[-1])}.values():
        engine.run(batch.input_ids, batch.attention_mask)
    best = float("inf")
    for _ in range(TIMED_PASSES):
        start = time.perf_counter()
        probs = run_batches(engine, batches, n_texts)
        best = min(best, time.perf_counter() - start)
    return probs, n_texts / best


def _scores(probs: np.ndarray, gold: np.ndarray, reference: np.ndarray, speed: float) -> EngineMeasure:
    predicted = probs.argmax(axis=1)
    return EngineMeasure(
        sentences_per_s=speed,
        accuracy=float((predicted == gold).mean()),
        agreement=float((predicted == reference.argmax(axis=1)).mean()),
        max_prob_diff=float(np.abs(probs - reference).max()),
    )


def _candidates(engines: Sequence[str] | None, force: str | None) -> list[str]:
    """torch first (the reference), then the others once each; unknown names fail before any work."""
    names = [force] if force is not None else list(ENGINE_NAMES if engines is None else engines)
    for name in names:
        split_name(name)
    return [REFERENCE_ENGINE, *(n for n in dict.fromkeys(names) if n != REFERENCE_ENGINE)]


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
    )


def measure_engine(
    version_dir: Path,
    name: str,
    batches: Sequence[TokenBatch],
    gold: np.ndarray,
    reference: np.ndarray,
    num_threads: int = 0,
) -> EngineMeasure:
    """Load engine ``name``, time it on ``batches`` and score it; a failure becomes ``error``."""
    engine = None
    try:
        engine = load_engine(version_dir, name, num_threads)
        probs, speed = time_engine(engine, batches, len(gold))
        return _scores(probs, gold, reference, speed)
    except Exception as exc:  # recorded, not raised: a failing candidate is simply not chosen
        return EngineMeasure(error=f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS])
    finally:
        del engine  # one engine in memory at a time
        gc.collect()


def choose_engine(
    version_dir: Path,
    texts: Sequence[str],
    gold: Sequence[str],
    *,
    accuracy_tolerance: float = 0.005,
    min_agreement: float = 0.97,
    num_threads: int = 0,
    engines: Sequence[str] | None = None,
    force: str | None = None,
    progress: bool = False,
) -> EngineChoice:
    """Measure the candidate engines (``engines``, default all; torch always) and choose one.

    ``gold`` are the texts' true label names. ``force`` names the engine to use whatever the rule
    says (it is still measured next to torch, and must load and run: ``EngineUnavailableError``).
    Engines are loaded one at a time and released after their measurement.
    """
    if len(texts) != len(gold) or not texts:
        raise ValueError(f"need one gold label per text (and some texts): {len(texts)} vs {len(gold)}")
    version_dir = Path(version_dir)
    names = _candidates(engines, force)
    with _progress(progress) as bar:
        task = bar.add_task(f"measuring {REFERENCE_ENGINE}", total=len(names))
        torch_engine = TorchEngine(version_dir, num_threads)
        index = {label: i for i, label in enumerate(torch_engine.classifier.labels)}
        gold_ids = np.asarray([index.get(label, -1) for label in gold])
        batches = token_batches(
            codec_for(read_meta(version_dir)), texts, token_budget=get_settings().triton.token_budget
        )
        reference, speed = time_engine(torch_engine, batches, len(texts))
        del torch_engine
        measures = {REFERENCE_ENGINE: _scores(reference, gold_ids, reference, speed)}
        for name in names[1:]:
            bar.update(task, advance=1, description=f"measuring {name}")
            measures[name] = measure_engine(version_dir, name, batches, gold_ids, reference, num_threads)
        bar.update(task, advance=1, description="engines measured")
    if force is not None:
        if measures[force].error is not None:
            raise EngineUnavailableError(f"forced engine {force} failed: {measures[force].error}")
        return EngineChoice(engine=force, measures=measures, texts=len(texts), forced=True)
    chosen = pick_engine(measures, accuracy_tolerance=accuracy_tolerance, min_agreement=min_agreement)
    return EngineChoice(engine=chosen, measures=measures, texts=len(texts))
