"""Sentence embeddings from a token encoder: masked mean pooling and a batched ``embed`` helper.

Both encoders were trained with mean pooling, so training, serving and embeddings pool the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

if TYPE_CHECKING:
    from driftline.models.encoders.catalog import EncoderBundle


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors where ``attention_mask`` is 1.

    Padding must not dilute the average (a padded short sentence would otherwise drift towards the
    pad vector), hence the mask-weighted sum divided by the real token count (clamped so an
    all-padding row gives zeros instead of NaN).
    """
    mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    summed = (last_hidden_state * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return summed / counts


@torch.inference_mode()
def embed(
    bundle: EncoderBundle,
    texts: Sequence[str],
    max_length: int = 256,
    normalize: bool = True,
    batch_size: int = 32,
) -> torch.Tensor:
    """Sentence embeddings, shape ``(len(texts), hidden_size)``, float32 on CPU.

    Texts are processed in batches of ``batch_size`` so that a long list does not pad everything to
    the longest text of the whole list. ``normalize`` L2-normalises rows (both models are meant to be
    compared by cosine similarity).
    """
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of texts, not a single string")
    if len(texts) == 0:
        return torch.empty((0, bundle.hidden_size), dtype=torch.float32)
    model = bundle.model
    device = next(model.parameters()).device
    chunks: list[torch.Tensor] = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        enc = bundle.tokenizer(
            batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        enc = {k: v.to(device) for k, v in enc.items() if k in _MODEL_INPUTS}
        out = model(**enc)
        pooled = mean_pool(out.last_hidden_state, enc["attention_mask"]).float()
        if normalize:
            pooled = F.normalize(pooled, p=2, dim=-1)
        chunks.append(pooled.cpu())
    return torch.cat(chunks, dim=0)
