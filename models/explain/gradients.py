"""Per-request explanations: gradient x input on the input embeddings, merged into readable words.

Chosen for cost (one backward pass per batch) and faithfulness (signed, from the deciding weights);
scores are a ranking aid, not a causal measurement.
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
