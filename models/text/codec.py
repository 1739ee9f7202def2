"""Texts to token ids for the classifier wire contract: the one place a served text becomes tensors.

``TextCodec`` encodes as training did, with the ``tokenizers`` library only, so the serving hot path and the
worker need no torch; long texts are cut ``head`` or ``head_tail``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from tokenizers import Tokenizer

if TYPE_CHECKING:
    from driftline.models.artifacts import ArtifactMeta
import functools
import re
import sys
import unicodedata

Truncation = Literal["head", "head_tail"]
TRUNCATIONS: tuple[str, ...] = ("head", "head_tail")


@dataclass(frozen=True, slots=True)
class Encoded:
    """Token ids of each text (special tokens included, unpadded) and whether it was cut."""

    ids: list[list[int]]
    truncated: list[bool]

    @property
    def lengths(self) -> list[int]:
        """Token count of each text."""
        return [len(ids) for ids in self.ids]


@lru_cache(maxsize=8)
def _tokenizer(encoder: str) -> Tokenizer:
    """The encoder's fast tokenizer (its ``tokenizer.json``, no weights, no torch), once per process."""
    from driftline.models.encoders.catalog import tokenizer_file

    tokenizer = Tokenizer.from_file(str(tokenizer_file(encoder)))
    tokenizer.no_truncation()  # the codec cuts (head or head+tail); a file's own settings must not
    tokenizer.no_padding()
    return tokenizer


def _special_tokens(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a single text ([CLS] .. [SEP], <s> .. </s>)."""
    bare = tokenizer.encode("a", add_special_tokens=False).ids
    full = tokenizer.encode("a").ids
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return list(full[:start]), list(full[start + len(bare) :])
    raise ValueError("cannot locate the text between the tokenizer's special tokens")


def _pad_id(tokenizer: Tokenizer) -> int:
    padding = tokenizer.padding
    if padding and padding.get("pad_id") is not None:
        return int(padding["pad_id"])
    for token in ("[PAD]", "<pad>"):
        found = tokenizer.token_to_id(token)
        if found is not None:
            return int(found)
    return 0


class TextCodec:
    """Encode texts for one model: tokenizer, length limit, normalization and truncation strategy."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        max_length: int,
        *,
        normalize_input: bool = True,
        truncation: Truncation = "head",
        head_share: float = 0.5,
    ) -> None:
        if truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
        if not 0.0 <= head_share <= 1.0:
            raise ValueError(f"head_share must be in [0, 1], got {head_share}")
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.normalize_input = normalize_input
        self.truncation = truncation
        self.head_share = head_share
        self.pad_id = _pad_id(tokenizer)
        self._prefix, self._suffix = _special_tokens(tokenizer)
        self._body = self.max_length - len(self._prefix) - len(self._suffix)
        if self._body < 1:
            raise ValueError(f"max_length {max_length} leaves no room for text tokens")

    @classmethod
    @lru_cache(maxsize=32)  # the inference clients ask per call; a codec is immutable once built
    def for_encoder(
        cls,
        encoder: str,
        max_length: int,
        *,
        normalize_input: bool = True,
        truncation: Truncation = "head",
        head_share: float = 0.5,
    ) -> TextCodec:
        """A codec over the registered encoder's tokenizer (``models.encoders`` registry key)."""
        return cls(
            _tokenizer(encoder),
            max_length,
            normalize_input=normalize_input,
            truncation=truncation,
            head_share=head_share,
        )

    def prepare(self, texts: Sequence[str]) -> list[str]:
        """The texts as the encoder sees them (normalized when the model was trained that way)."""
        return normalize_all(texts) if self.normalize_input else list(texts)

    def encode(self, texts: Sequence[str]) -> Encoded:
        """Token ids per text, cut to ``max_length`` by the codec's truncation strategy."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single string")
        prepared = self.prepare(texts)
        body = self._body
        head = body if self.truncation == "head" else round(body * self.head_share)
        ids: list[list[int]] = []
        truncated: list[bool] = []
        for encoding in self.tokenizer.encode_batch(prepared, add_special_tokens=False):
            piece = encoding.ids
            cut = len(piece) > body
            kept = [*piece[:head], *piece[len(piece) - (body - head) :]] if cut else list(piece)
            ids.append([*self._prefix, *kept, *self._suffix])
            truncated.append(cut)
        return Encoded(ids, truncated)


def codec_for(meta: ArtifactMeta) -> TextCodec:
    """The codec a version (``meta.json``) is served with: its encoder, length and normalization, and
    the truncation its task declares (``head`` for a task no longer declared)."""
    from driftline.models.tasks import get_task

    try:
        truncation = get_task(meta.task).truncation
    except KeyError:
        truncation = "head"
    return TextCodec.for_encoder(
        meta.encoder, meta.max_length, normalize_input=meta.normalize_input, truncation=truncation
    )


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

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")


def _is_cjk(ch: str) -> bool:
    return bool(_CJK.match(ch))


_KEEP_CONTROLS = {"\n", "\t"}
_LETTER = re.compile(r"\w+", re.UNICODE)
#: any look-alike: a text without one is never changed by the folding
_ANY_CONFUSABLE = re.compile("[" + "".join(CONFUSABLES) + "]")


@functools.cache
def _invisible() -> re.Pattern[str]:
    """One character class of every format (Cf) and control (Cc) character except ``\\n`` and ``\\t``.

    Built once per process from this Python's Unicode database (a fraction of a second), so that
    stripping is one regex pass in C instead of a category lookup per character in Python: the
    worker normalizes every event it classifies.
    """
    ranges: list[tuple[int, int]] = []
    for code in range(sys.maxunicode + 1):
        ch = chr(code)
        if ch not in _KEEP_CONTROLS and unicodedata.category(ch) in ("Cf", "Cc"):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    return re.compile("[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges) + "]")


def _strip_invisible(text: str) -> str:
    """Drop format (Cf: zero-width, bidi, BOM, soft hyphen) and control (Cc) characters.

    ``\\n`` and ``\\t`` survive and a lone ``\\r`` becomes ``\\n`` (old Mac line ends); every other
    control character is removed, so an attacker cannot split a word with one.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _invisible().sub("", text)


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
    if not _ANY_CONFUSABLE.search(text):  # nothing to fold: skip the per-character pass
        return text
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
    """:func:`normalize` of each text."""
    return [normalize(t, fold=fold) for t in texts]
