"""Length-aware batching: sort a micro-batch by token length and cut it by a token budget.

Cuts padding waste: ``plan_batches`` decides the grouping, ``padding_waste`` measures a plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from driftline.models.text.codec import TextCodec

#: default token budget of one inference call (rows x padded length): 32 texts of 128 tokens
DEFAULT_TOKEN_BUDGET = 4096


def plan_batches(lengths: Sequence[int], token_budget: int, max_batch: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into batches: sorted by length, each ``rows x longest <= budget``.

    A single text longer than the budget still gets its own batch (it cannot be split). Batches come
    longest first, so the most expensive call starts early.
    """
    if token_budget < 1 or max_batch < 1:
        raise ValueError(f"token_budget and max_batch must be positive, got {token_budget}, {max_batch}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = lengths[current[0]] if current else lengths[index]
        if current and (len(current) >= max_batch or (len(current) + 1) * longest > token_budget):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def count_batches(count: int, batch_size: int) -> list[list[int]]:
    """Arrival-order batches of ``batch_size`` rows (what a count-based batcher does)."""
    return [list(range(start, min(start + batch_size, count))) for start in range(0, count, batch_size)]


def pad(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id lists to the longest: ``(input_ids, attention_mask)``, both int64."""
    width = max((len(row) for row in ids), default=0)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return input_ids, mask


def padding_waste(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of padded positions over all positions the batches compute (0 = no padding)."""
    computed = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches if batch)
    real = sum(lengths[i] for batch in batches for i in batch)
    return 0.0 if computed == 0 else 1.0 - real / computed


@dataclass(frozen=True)
class TokenBatch:
    """One padded batch: ``rows`` are the input positions of its texts, in batch order."""

    rows: np.ndarray  # int64 [batch]
    input_ids: np.ndarray  # int64 [batch, seq]
    attention_mask: np.ndarray  # int64 [batch, seq]


def token_batches(
    codec: TextCodec,
    texts: Sequence[str],
    *,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    max_batch: int = 64,
) -> list[TokenBatch]:
    """``texts`` encoded by ``codec`` and planned into length-sorted batches within ``token_budget``."""
    if isinstance(texts, str):
        raise TypeError("token_batches() takes a sequence of texts, not a single string")
    encoded = codec.encode(texts)
    batches = []
    for rows in plan_batches(encoded.lengths, token_budget, max_batch):
        input_ids, mask = pad([encoded.ids[i] for i in rows], codec.pad_id)
        batches.append(TokenBatch(np.asarray(rows, dtype=np.int64), input_ids, mask))
    return batches
