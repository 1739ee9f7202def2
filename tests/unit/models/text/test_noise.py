"""Noise generators and input normalization (models.text: noise, normalize) on real dataset texts."""

from __future__ import annotations

import pytest

from driftline.models.datasets import load_dataset
from driftline.models.text.noise import NOISES, perturb


@pytest.fixture(scope="module")
def english() -> list[str]:
    return [e.text[:600] for e in load_dataset("bbc_news").split("test")[:40]]


@pytest.mark.parametrize("kind", [*NOISES, "visual", "mixed"])
def test_noise_is_deterministic_and_changes_text(kind: str, english: list[str]) -> None:
    noisy = [perturb(t, kind, seed=3) for t in english]
    assert noisy == [perturb(t, kind, seed=3) for t in english]
    assert noisy != [perturb(t, kind, seed=4) for t in english]
    changed = sum(a != b for a, b in zip(english, noisy, strict=True))
    assert changed >= 0.9 * len(english), f"{kind} changed only {changed}/{len(english)} texts"


def test_typos_look_like_keyboard_mistakes() -> None:
    text = "interest rates"
    noisy = {perturb(text, "typos", rate=0.3, seed=s) for s in range(30)}
    assert len(noisy) > 10
    for variant in noisy:
        assert abs(len(variant) - len(text)) <= 4 and variant.isascii()


def test_unknown_noise_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown noise 'blur'"):
        perturb("x", "blur")


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


def test_augment_makes_noisy_copies_of_examples() -> None:
    from driftline.models.text.noise import augment

    examples = load_dataset("bbc_news").split("train")[:10]
    noisy = augment(examples, copies=2)
    assert len(noisy) == 20
    assert all(n.label == e.label for n, e in zip(noisy[::2], examples, strict=True))
    assert sum(n.text != e.text for n, e in zip(noisy[::2], examples, strict=True)) >= 9
    assert noisy == augment(examples, copies=2)
