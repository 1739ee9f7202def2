"""Per-request explanations: gradient x input on the input embeddings, merged into readable words.

Why gradient x input (and not the alternatives):

- *Cost*: one backward pass through the encoder for the whole batch, in the same request as the
  prediction (roughly 2-3x a forward pass on CPU). Integrated gradients or SHAP/LIME need tens to
  hundreds of forward passes per text, which a streaming classifier cannot afford on every event.
- *Faithfulness*: it is the first-order Taylor contribution of each token's embedding to the
  predicted class logit, so it is computed from the very weights (merged LoRA + head) that made the
  decision, and it is signed: positive means the token pushed towards the predicted label.
  Attention rollout is about as cheap but explains where attention flowed, not what moved the
  logit; it ignores the value vectors, the feed-forward layers and the classification head, and it
  needs eager attention (no SDPA), which makes the forward pass itself slower.
- Known limits: it is a local linearisation (saturated tokens can be under-credited), so scores
  are a ranking aid for analysts, not a causal measurement.

The batch gradient is exact per item: items do not interact in a transformer forward pass (padding
is masked), so the gradient of the *sum* of each item's predicted logit with respect to item i's
embeddings equals the gradient of item i's own logit.

Wordpieces (``##ing``) and sentencepieces (``▁word``) are merged back into words using the fast
tokenizer's ``word_ids`` and character offsets, and the word is shown as it appears in the original
text. Special tokens ([CLS], [SEP], <s>, padding) have no word id and are skipped. Chinese/Japanese
text has no spaces, so a sentencepiece "word" can be a whole clause; there each subword piece is kept
as its own unit (pieces of CJK text are already readable words such as 喜欢).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

TOP_K = 5
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")


def attribution_scores(
    logits: torch.Tensor, predicted: torch.Tensor, embeddings: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Signed gradient x input per token, shape ``(batch, seq)``, each row scaled to sum(|s|) = 1.

    The scaling makes scores comparable between texts of different lengths and confidence; padding
    positions are zero.
    """
    target = logits.gather(1, predicted.unsqueeze(1)).sum()
    (grad,) = torch.autograd.grad(target, embeddings)
    scores = (grad * embeddings).sum(dim=-1).detach().float() * mask.to(torch.float32)
    norm = scores.abs().sum(dim=1, keepdim=True).clamp(min=1e-12)
    return (scores / norm).cpu()


def _cjk_pieces(
    text: str, positions: list[int], offsets: Sequence[Sequence[int]], scores: Sequence[float]
) -> list[tuple[str, float]]:
    """Subword pieces of a CJK run; a bare "▁" piece (whose offsets overlap the next piece) is folded
    into the piece that follows it instead of being shown as a duplicate character."""
    pieces: list[tuple[str, float]] = []
    carry = 0.0
    for index, p in enumerate(positions):
        nxt = positions[index + 1] if index + 1 < len(positions) else None
        if nxt is not None and offsets[nxt][0] < offsets[p][1]:
            carry += float(scores[p])
            continue
        piece = text[offsets[p][0] : offsets[p][1]].strip()
        if piece:
            pieces.append((piece, float(scores[p]) + carry))
            carry = 0.0
    return pieces


def merge_to_words(
    text: str,
    word_ids: Sequence[int | None],
    offsets: Sequence[Sequence[int]],
    scores: Sequence[float],
    top_k: int = TOP_K,
) -> list[tuple[str, float]]:
    """Sum token scores into words, return the ``top_k`` words most supporting the prediction.

    A word that occurs several times is listed once, with its highest-scoring occurrence.
    """
    groups: dict[int, list[int]] = {}
    for pos, word in enumerate(word_ids):
        if word is not None:
            groups.setdefault(word, []).append(pos)
    units: list[tuple[str, float]] = []
    for positions in groups.values():
        start = min(offsets[p][0] for p in positions)
        end = max(offsets[p][1] for p in positions)
        span = text[start:end].strip()
        if not span:
            continue
        if _CJK.search(span) and len(positions) > 1:
            units.extend(_cjk_pieces(text, positions, offsets, scores))
        else:
            units.append((span, float(sum(scores[p] for p in positions))))
    best: dict[str, float] = {}
    for word, score in units:
        if word not in best or score > best[word]:
            best[word] = score
    ranked = sorted(best.items(), key=lambda item: item[1], reverse=True)[:top_k]
    return [(word, round(score, 4)) for word, score in ranked]
