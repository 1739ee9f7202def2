"""The updater's holdout split (online.update.data): stable, disjoint, and drawn only from feedback
after the drift.
"""

from __future__ import annotations

from driftline.models.datasets import Example, text_id
from driftline.online.update.data import hash_split, update_split


def test_holdout_split_is_stable_and_disjoint() -> None:
    examples = [Example(text_id(f"text {i}"), f"text {i}", "sport") for i in range(1000)]
    train, holdout = hash_split(examples, 0.2)
    assert 150 < len(holdout) < 250 and len(train) + len(holdout) == 1000
    assert hash_split(list(reversed(examples)), 0.2)[1][::-1] == holdout
    assert not {e.id for e in train} & {e.id for e in holdout}


def test_holdout_comes_only_from_feedback_after_the_drift() -> None:
    before = [Example(text_id(f"old {i}"), f"old {i}", "sport") for i in range(300)]
    after = [Example(text_id(f"new {i}"), f"new {i}", "tech") for i in range(100)]
    train, holdout = update_split(before + after, after, 0.3)
    assert holdout and {e.id for e in holdout} <= {e.id for e in after}
    assert len(train) + len(holdout) == 400 and not {e.id for e in train} & {e.id for e in holdout}
    assert len(update_split(before + after, None, 0.3)[1]) > len(holdout)  # no drift: from all
