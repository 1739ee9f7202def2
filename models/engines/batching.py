"""Texts -> length-sorted, per-batch padded token tensors, the way a classifier version was trained.

Engines take tensors, so whoever feeds them tokenizes: with the classifier's own tokenizer, after its
normalization (``Classifier.prepare``), truncated to the artifact's ``max_length``. Sorting by length
before batching keeps padding (wasted compute on every engine) small; each batch remembers which
input rows it holds so results go back in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from driftline.models.classifier import Classifier, pad_batch


@dataclass(frozen=True)
class TokenBatch:
    """One padded batch: ``rows`` are the input positions of its texts, in batch order."""

    rows: np.ndarray  # int64 [batch]
    input_ids: np.ndarray  # int64 [batch, seq]
    attention_mask: np.ndarray  # int64 [batch, seq]


def token_batches(classifier: Classifier, texts: Sequence[str], batch_size: int = 32) -> list[TokenBatch]:
    """``texts`` tokenized as ``classifier`` was trained, sorted by length, in batches of ``batch_size``."""
    if isinstance(texts, str):
        raise TypeError("token_batches() takes a sequence of texts, not a single string")
    if not texts:
        return []
    ids = classifier.tokenizer(classifier.prepare(texts), truncation=True, max_length=classifier.max_length)[
        "input_ids"
    ]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    pad_id = classifier.tokenizer.pad_token_id or 0
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        input_ids, mask = pad_batch([ids[i] for i in rows], pad_id)
        batches.append(TokenBatch(np.asarray(rows, dtype=np.int64), input_ids.numpy(), mask.numpy()))
    return batches
