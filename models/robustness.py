"""Character-level adversarial noise and the input normalization that undoes most of it.

Why: classifiers see raw user text. Cheap evasions - Cyrillic/Greek look-alikes (``pаypal`` with a
Cyrillic ``а``), fullwidth or mathematical letters, zero-width characters inside words, stray control
characters - change the tokens the encoder sees while a human reads the same text. Typos (adjacent
keys swapped, dropped, inserted) are the benign version of the same thing. This module

* generates such noise deterministically (seeded) for robustness measurements and augmentation:
  :func:`typos`, :func:`homoglyphs`, :func:`fullwidth`, :func:`zero_width`, :func:`perturb`;
* normalizes input (:func:`normalize`): NFKC (folds fullwidth/compatibility forms), removes
  zero-width/format and control characters, and folds Cyrillic/Greek look-alikes to Latin *only* in
  words that are mostly Latin or in texts whose letters are mostly Latin, so real Russian or Greek
  text is left alone, and CJK text (e.g. the Chinese chat task) is never touched by the folding.

Pure Python and standard library only, so serving (Triton python backend), training and the
benchmark can all call it.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import TypeVar

ExampleT = TypeVar("ExampleT")

# --- look-alike tables -----------------------------------------------------------------------------

#: Cyrillic and Greek letters that render (near-)identically to a Latin letter in common fonts.
CONFUSABLES: dict[str, str] = {
    # Cyrillic lower / upper
    "а": "a", "в": "b", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i",
    "ј": "j", "ѕ": "s", "ԁ": "d", "һ": "h", "ӏ": "l", "ԛ": "q", "ԝ": "w", "к": "k", "п": "n",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C",
    "Т": "T", "Х": "X", "У": "Y", "І": "I", "Ј": "J", "Ѕ": "S", "Ԁ": "D", "Һ": "H", "Ԛ": "Q",
    "Ԝ": "W", "Ӏ": "I",
    # Greek lower / upper
    "α": "a", "ο": "o", "ρ": "p", "ν": "v", "ι": "i", "κ": "k", "υ": "u", "τ": "t", "ε": "e",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
}  # fmt: skip

#: Latin letter -> look-alikes an attacker would pick (the inverse of CONFUSABLES).
LOOKALIKES: dict[str, list[str]] = {}
for _glyph, _latin in CONFUSABLES.items():
    LOOKALIKES.setdefault(_latin, []).append(_glyph)

#: Invisible characters used to split words without a visible change.
ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad")

#: QWERTY neighbours, for typos a person would actually make.
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
KEY_NEIGHBOURS: dict[str, str] = {}
for _r, _row in enumerate(_ROWS):
    for _c, _key in enumerate(_row):
        # same row left/right; staggered rows: above = columns c, c+1; below = columns c-1, c
        _near = [(_r, _c - 1), (_r, _c + 1), (_r - 1, _c), (_r - 1, _c + 1), (_r + 1, _c - 1), (_r + 1, _c)]
        KEY_NEIGHBOURS[_key] = "".join(
            _ROWS[r][c] for r, c in _near if 0 <= r < len(_ROWS) and 0 <= c < len(_ROWS[r])
        )

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")


def _is_cjk(ch: str) -> bool:
    return bool(_CJK.match(ch))


# --- noise -------------------------------------------------------------------------------------------


def typos(text: str, rate: float, rng: random.Random) -> str:
    """Keyboard typos on ``rate`` of the letters: swap with the next letter, drop, insert or replace
    with a QWERTY neighbour. CJK characters get the script-neutral ones (swap, drop, duplicate)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if not ch.isalpha() or rng.random() >= rate:
            out.append(ch)
            i += 1
            continue
        lower = ch.lower()
        ops = ["swap", "drop", "insert", "replace"] if lower in KEY_NEIGHBOURS else ["swap", "drop", "double"]
        op = rng.choice(ops)
        if op == "swap" and i + 1 < len(text) and text[i + 1].isalpha():
            out.append(text[i + 1])
            out.append(ch)
            i += 2
            continue
        if op == "drop":
            pass
        elif op == "insert":
            out.append(ch)
            out.append(_same_case(rng.choice(KEY_NEIGHBOURS[lower]), ch))
        elif op == "replace":
            out.append(_same_case(rng.choice(KEY_NEIGHBOURS[lower]), ch))
        else:  # double, or a swap at the end of a word
            out.append(ch + ch if op == "double" else ch)
        i += 1
    return "".join(out)


def _same_case(new: str, like: str) -> str:
    return new.upper() if like.isupper() else new


def homoglyphs(text: str, rate: float, rng: random.Random) -> str:
    """Replace ``rate`` of the Latin letters that have a Cyrillic/Greek look-alike with one."""
    return "".join(
        rng.choice(LOOKALIKES[ch]) if ch in LOOKALIKES and rng.random() < rate else ch for ch in text
    )


def fullwidth(text: str, rate: float, rng: random.Random) -> str:
    """Replace ``rate`` of the printable ASCII characters with their fullwidth (U+FF01..) forms, and
    some letters with mathematical bold letters (both fold back under NFKC)."""
    out = []
    for ch in text:
        if "!" <= ch <= "~" and rng.random() < rate:
            if ch.isascii() and ch.isalpha() and rng.random() < 0.3:
                first = "A" if ch.isupper() else "a"
                base = 0x1D400 if ch.isupper() else 0x1D41A  # MATHEMATICAL BOLD CAPITAL A / SMALL A
                out.append(chr(base + ord(ch) - ord(first)))
            else:
                out.append(chr(ord(ch) - 0x21 + 0xFF01))
        else:
            out.append(ch)
    return "".join(out)


def zero_width(text: str, rate: float, rng: random.Random) -> str:
    """Insert an invisible character after ``rate`` of the visible characters (mostly inside words)."""
    out = []
    for ch in text:
        out.append(ch)
        if not ch.isspace() and rng.random() < rate:
            out.append(rng.choice(ZERO_WIDTH))
    return "".join(out)


def control_chars(text: str, rate: float, rng: random.Random) -> str:
    """Insert C0/C1 control characters (NUL excluded: it is a different class of bug) at ``rate``."""
    controls = [chr(c) for c in (*range(1, 9), 11, 12, *range(14, 32), 127, *range(0x80, 0xA0))]
    out = []
    for ch in text:
        out.append(ch)
        if rng.random() < rate:
            out.append(rng.choice(controls))
    return "".join(out)


NoiseFn = Callable[[str, float, random.Random], str]

#: name -> (generator, default rate). "mixed" applies them all at once.
NOISES: dict[str, tuple[NoiseFn, float]] = {
    "typos": (typos, 0.06),
    "homoglyphs": (homoglyphs, 0.25),
    "fullwidth": (fullwidth, 0.25),
    "zero_width": (zero_width, 0.2),
    "control": (control_chars, 0.05),
}


#: combined noises, each generator at half its default rate: "visual" is what an evader uses (the
#: text still reads the same), "mixed" adds typos, which no normalization can undo.
COMBINED: dict[str, tuple[str, ...]] = {
    "visual": ("homoglyphs", "fullwidth", "zero_width", "control"),
    "mixed": ("typos", "homoglyphs", "fullwidth", "zero_width", "control"),
}


def perturb(text: str, kind: str, *, rate: float | None = None, seed: int | str = 0) -> str:
    """Apply noise ``kind`` (a key of :data:`NOISES` or :data:`COMBINED`); deterministic for a seed.

    The seed is combined with the text so a dataset gets different noise per example while a rerun
    gets exactly the same noise.
    """
    rng = random.Random(f"{seed}:{text}")
    if kind in COMBINED:
        for name in COMBINED[kind]:
            fn, default = NOISES[name]
            text = fn(text, (rate if rate is not None else default) / 2, rng)
        return text
    if kind not in NOISES:
        raise ValueError(f"unknown noise {kind!r}; choose from {[*NOISES, *COMBINED]}")
    fn, default = NOISES[kind]
    return fn(text, rate if rate is not None else default, rng)


def perturb_all(
    texts: Sequence[str], kind: str, *, rate: float | None = None, seed: int | str = 0
) -> list[str]:
    return [perturb(t, kind, rate=rate, seed=seed) for t in texts]


# --- normalization ----------------------------------------------------------------------------------

_KEEP_CONTROLS = {"\n", "\t"}
_LETTER = re.compile(r"\w+", re.UNICODE)


def _strip_invisible(text: str) -> str:
    """Drop format (Cf: zero-width, bidi, BOM, soft hyphen) and control (Cc) characters.

    ``\\n`` and ``\\t`` survive and a lone ``\\r`` becomes ``\\n`` (old Mac line ends); every other
    control character is removed, so an attacker cannot split a word with one.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(ch for ch in text if ch in _KEEP_CONTROLS or unicodedata.category(ch) not in ("Cf", "Cc"))


#: Fullwidth punctuation (not letters/digits): ordinary in Chinese text, so kept there.
_FULLWIDTH_PUNCT = re.compile(r"([\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65\u3000])")


def _nfkc(text: str) -> str:
    """NFKC, except that fullwidth punctuation in text containing CJK is left as written.

    NFKC would turn Chinese ``，`` and ``！`` into ASCII ``,`` and ``!``: harmless to read, but not
    what the Chinese model was trained on. Fullwidth *letters and digits* are folded everywhere.
    """
    if not _CJK.search(text):
        return unicodedata.normalize("NFKC", text)
    parts = _FULLWIDTH_PUNCT.split(text)
    return "".join(part if i % 2 else unicodedata.normalize("NFKC", part) for i, part in enumerate(parts))


def _script(ch: str) -> str:
    if "a" <= ch.lower() <= "z":
        return "latin"
    if ch in CONFUSABLES:
        return "confusable"
    if _is_cjk(ch):
        return "cjk"
    if ch.isalpha():
        name = unicodedata.name(ch, "")
        return "cyrillic" if "CYRILLIC" in name else "greek" if "GREEK" in name else "other"
    return "none"


def fold_homoglyphs(text: str) -> str:
    """Fold Cyrillic/Greek look-alikes to Latin where the context is Latin.

    A word is folded when it holds at least one Latin letter and no non-confusable Cyrillic/Greek
    letter (a genuine foreign word), or when it is made only of look-alikes and the text's letters
    are mostly Latin (an English text whose word ``сор`` is entirely Cyrillic). CJK text and real
    Russian/Greek words are never changed.
    """
    counts = {"latin": 0, "foreign": 0}
    for ch in text:
        s = _script(ch)
        if s == "latin":
            counts["latin"] += 1
        elif s in ("cyrillic", "greek"):
            counts["foreign"] += 1
    mostly_latin = counts["latin"] > 0 and counts["latin"] >= 3 * counts["foreign"]

    def fold(match: re.Match[str]) -> str:
        word = match.group(0)
        scripts = [_script(ch) for ch in word]
        if "confusable" not in scripts or "cyrillic" in scripts or "greek" in scripts:
            return word
        if "latin" in scripts or mostly_latin:
            return "".join(CONFUSABLES.get(ch, ch) for ch in word)
        return word

    return _LETTER.sub(fold, text)


def normalize(text: str, *, fold: bool = True) -> str:
    """NFKC, then remove zero-width/format/control characters, then fold look-alikes to Latin.

    Idempotent (``normalize(normalize(t)) == normalize(t)``). NFKC maps fullwidth and mathematical
    letters to ASCII and CJK compatibility ideographs to unified ones; it does not change ordinary
    Chinese characters, and fullwidth punctuation in CJK text is kept (see ``_nfkc``). Invisible
    characters are removed *after* NFKC because NFKC can expose them.
    """
    text = _strip_invisible(_nfkc(text))
    if fold:
        text = fold_homoglyphs(text)
    return _nfkc(text)


def normalize_all(texts: Sequence[str], *, fold: bool = True) -> list[str]:
    return [normalize(t, fold=fold) for t in texts]


def augment(
    examples: Sequence[ExampleT],
    *,
    kinds: Sequence[str] = ("typos", "mixed"),
    copies: int = 1,
    seed: int = 0,
    make: Callable[[ExampleT, str], ExampleT] | None = None,
) -> list[ExampleT]:
    """Noisy copies of training examples (noise augmentation; typos are what normalize() cannot undo).

    Returns ``copies`` noisy variants per example, cycling through ``kinds``. ``make(example, text)``
    builds the copy (default: ``dataclasses.replace(example, text=text)``, which suits
    ``driftline.models.datasets.Example``). The originals are not included; concatenate them yourself.
    """
    import dataclasses

    build = make or (lambda example, text: dataclasses.replace(example, text=text))  # type: ignore[type-var]
    out: list[ExampleT] = []
    for i, example in enumerate(examples):
        for c in range(copies):
            kind = kinds[(i + c) % len(kinds)]
            out.append(build(example, perturb(example.text, kind, seed=f"{seed}:{c}")))  # type: ignore[attr-defined]
    return out
