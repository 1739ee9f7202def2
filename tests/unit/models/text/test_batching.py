"""Length-aware batching and the text codec: the token plan every inference call is cut by."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from driftline.models.text.batching import count_batches, pad, padding_waste, plan_batches


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
