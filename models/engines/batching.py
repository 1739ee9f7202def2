"""Texts -> padded token tensors for an engine, exactly as a serving client makes them.

Engines take tensors, so whoever feeds them encodes: the selection's measurement and the ONNX trace use
the serving path's own steps (``driftline.models.serving.codec.TextCodec``, then
``driftline.models.serving.batching.plan_batches``: length-sorted, cut by a token budget), so an engine
is measured on the batch shapes it will serve. Each batch remembers which input rows it holds, so
results go back in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from driftline.models.serving.batching import DEFAULT_TOKEN_BUDGET, pad, plan_batches
from driftline.models.serving.codec import TextCodec


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
