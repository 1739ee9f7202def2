"""Shared timing: a model timed the way serving calls it, and the percentile every latency figure uses.

For ``bench.models_bench`` and ``bench.pipeline_bench``: ``encode_texts`` (the version's codec), a plan
(``plan_batches``: length-sorted in a token budget; ``count_batches``: arrival order), ``run_plan``
(times the engine calls only) and ``percentile`` (nearest rank). Method: docs/benchmarks.md.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from driftline.models.artifacts import read_meta
from driftline.models.tasks import get_task
from driftline.models.text.batching import pad
from driftline.models.text.codec import TextCodec

#: one inference call over the texts at these indices: probabilities [len(batch), labels], or None
#: for a call that yields none (the explanation-only row)
Call = Callable[[list[int]], np.ndarray | None]


@dataclass(frozen=True)
class EncodedTexts:
    """Token ids of the benchmark texts (unpadded) and the pad id of their tokenizer."""

    ids: list[list[int]]
    pad_id: int

    @property
    def lengths(self) -> list[int]:
        """Token count of each text."""
        return [len(row) for row in self.ids]

    def tensors(self, batch: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids, attention_mask)`` of the texts at ``batch``, right-padded to the longest."""
        return pad([self.ids[i] for i in batch], self.pad_id)


def codec_for(version_dir: Path) -> TextCodec:
    """The codec serving uses for the version in ``version_dir`` (its meta, its task's truncation)."""
    meta = read_meta(version_dir)
    return TextCodec.for_encoder(
        meta.encoder,
        meta.max_length,
        normalize_input=meta.normalize_input,
        truncation=get_task(meta.task).truncation,  # type: ignore[arg-type]
    )


def encode_texts(version_dir: Path, texts: Sequence[str]) -> EncodedTexts:
    """``texts`` encoded for the version in ``version_dir``."""
    codec = codec_for(version_dir)
    return EncodedTexts(codec.encode(list(texts)).ids, codec.pad_id)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by the nearest-rank rule; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class PlanRun:
    """What running (part of) a plan did: rows and calls done, their time, and the probabilities."""

    rows: int = 0
    seconds: float = 0.0  # sum of the calls' times
    latencies_ms: list[float] = field(default_factory=list)
    probs: np.ndarray | None = None  # [n_texts, labels] in input order; rows not run stay zero
    done: list[int] = field(default_factory=list)  # indices of the texts run

    @property
    def sentences_per_s(self) -> float:
        """Rows per second of call time."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, float | int]:
        """sentences/s, p50/p99 per call (ms), calls and texts, rounded for the report."""
        return {
            "sentences_per_s": round(self.sentences_per_s, 2),
            "p50_ms": round(statistics.median(self.latencies_ms), 2) if self.latencies_ms else 0.0,
            "p99_ms": round(percentile(self.latencies_ms, 0.99), 2),
            "calls": len(self.latencies_ms),
            "texts": self.rows,
        }


def run_plan(
    call: Call,
    plan: Sequence[Sequence[int]],
    n_texts: int,
    *,
    budget_s: float | None = None,
    min_calls: int = 1,
) -> PlanRun:
    """Run ``call`` on each batch of ``plan`` in order; with ``budget_s``, stop once that much call
    time is spent and at least ``min_calls`` calls ran (the rest of the plan is skipped)."""
    result = PlanRun()
    for batch in plan:
        if budget_s is not None and len(result.latencies_ms) >= min_calls and result.seconds >= budget_s:
            break
        rows = list(batch)
        started = time.perf_counter()
        probs = call(rows)
        elapsed = time.perf_counter() - started
        result.seconds += elapsed
        result.latencies_ms.append(elapsed * 1000.0)
        result.rows += len(rows)
        result.done.extend(rows)
        if probs is not None:
            if result.probs is None:
                result.probs = np.zeros((n_texts, probs.shape[1]), dtype=np.float32)
            result.probs[rows] = probs
    return result


def engine_call(engine: object, encoded: EncodedTexts) -> Call:
    """A ``Call`` that pads the texts at the indices and runs ``engine.run`` on them."""

    def call(batch: list[int]) -> np.ndarray:
        return np.asarray(engine.run(*encoded.tensors(batch)))  # type: ignore[attr-defined]

    return call
