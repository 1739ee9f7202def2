"""Noise generators (models.text.noise) on real dataset texts: deterministic, keyboard-like typos, a
clear error for an unknown noise, and noisy copies for augmentation.
"""

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


def test_augment_makes_noisy_copies_of_examples() -> None:
    from driftline.models.text.noise import augment

    examples = load_dataset("bbc_news").split("train")[:10]
    noisy = augment(examples, copies=2)
    assert len(noisy) == 20
    assert all(n.label == e.label for n, e in zip(noisy[::2], examples, strict=True))
    assert sum(n.text != e.text for n, e in zip(noisy[::2], examples, strict=True)) >= 9
    assert noisy == augment(examples, copies=2)
