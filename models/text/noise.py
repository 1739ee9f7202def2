"""Character-level noise (typos, homoglyphs, fullwidth, zero-width, control), seeded and reproducible.

:func:`augment` for training, :func:`perturb` for the robustness benchmark and tests.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

from driftline.models.text.codec import CONFUSABLES

ExampleT = TypeVar("ExampleT")

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
    """:func:`perturb` of each text."""
    return [perturb(t, kind, rate=rate, seed=seed) for t in texts]


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
