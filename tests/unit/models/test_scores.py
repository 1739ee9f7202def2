"""``classification_report`` (models.scores): accuracy and per-class scores for known predictions."""

from __future__ import annotations

import pytest

from driftline.models.scores import classification_report


def test_classification_report_scores() -> None:
    report = classification_report(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b", "c"])
    assert report["accuracy"] == 0.75
    assert report["confusion"] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert report["per_class"]["a"]["recall"] == 0.5 and report["per_class"]["b"]["precision"] == 0.6667
    # "c" never occurs: excluded from the macro average; a=0.6667, b=0.8
    assert report["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    with pytest.raises(ValueError, match="not in the label list"):
        classification_report(["a"], ["z"], ["a", "b"])
