"""Normalization against noise on real news: a trained classifier loses at most half as much (trains)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_normalization_at_least_halves_the_accuracy_drop_on_news() -> None:
    """The acceptance figure on a real classifier: visual noise costs accuracy, normalize() wins it back.

    Uses a small cached classifier on 80 test examples; MiniLM's tokenizer
    already drops zero-width and control characters, so homoglyph, fullwidth and all visual noise
    together are measured (typos are not: no normalization undoes them, see the benchmark).
    """
    from bench.reliability_bench import measure_robustness

    figures = measure_robustness("news_topic", n=80, kinds=("homoglyphs", "fullwidth", "visual"), small=True)
    assert abs(figures["clean"] - figures["clean_normalized"]) <= 0.02, "normalize() hurts clean text"
    for kind, f in figures["noise"].items():
        assert f["drop"] > 0.03, f"{kind} noise did not hurt the model at all: {f}"
        assert f["drop_normalized"] <= f["drop"] / 2, f"{kind}: drop not halved: {f}"
