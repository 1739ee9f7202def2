"""``merge_to_words`` (``models.explain.gradients``): wordpieces join into words, special tokens are
skipped, CJK pieces are kept and a bare metaspace is folded.
"""

from __future__ import annotations

from driftline.models.explain.gradients import merge_to_words


def test_merge_to_words_joins_wordpieces_and_skips_special_tokens() -> None:
    text = "Unbelievable goals"
    # [CLS] un ##bel ##ievable goals [SEP]
    word_ids = [None, 0, 0, 0, 1, None]
    offsets = [(0, 0), (0, 2), (2, 5), (5, 12), (13, 18), (0, 0)]
    scores = [0.9, 0.1, 0.1, 0.1, 0.2, 0.9]
    assert merge_to_words(text, word_ids, offsets, scores) == [("Unbelievable", 0.3), ("goals", 0.2)]


def test_merge_to_words_keeps_cjk_pieces_and_folds_bare_metaspace() -> None:
    text = "电影很好看 great"
    # ▁ 电影 很 好看 ▁great  (the bare ▁ overlaps 电影, like XLM-R's tokenizer)
    word_ids = [None, 0, 0, 0, 0, 1, None]
    offsets = [(0, 0), (0, 1), (0, 2), (2, 3), (3, 5), (5, 11), (0, 0)]
    scores = [0.0, 0.05, 0.1, -0.2, 0.4, 0.3, 0.0]
    assert merge_to_words(text, word_ids, offsets, scores, top_k=3) == [
        ("好看", 0.4),
        ("great", 0.3),
        ("电影", 0.15),
    ]
