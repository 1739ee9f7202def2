"""Texts to token ids for the classifier wire contract: the one place a served text becomes tensors.

The serving hot path is tensor-only: the worker's inference client encodes texts here, Triton
receives ``INPUT_IDS``/``ATTENTION_MASK`` and answers ``PROBS`` (``driftline.models.inference.base``).
That keeps Python out of the production server (Triton's native onnxruntime backend serves the same
ONNX graph) and puts the tokens where the micro-batch is, so batches can be shaped by length
(``driftline.models.text.batching``).

Encoding does what training did: the text is normalized when the artifact says so, then tokenized
with the encoder's fast tokenizer (its ``tokenizer.json`` through the ``tokenizers`` library, so a
worker needs neither torch nor transformers) and cut to ``max_length`` tokens. Two ways to cut:

- ``head`` (the default): the first ``max_length - 2`` tokens, as in training;
- ``head_tail``: the first and the last tokens of a long text, ``head_share`` of the room for the
  head (Sun et al., 2019, "How to fine-tune BERT for text classification?"), for tasks whose
  endings matter.

``truncated`` says whether anything was cut, so every label row can say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from tokenizers import Tokenizer

from driftline.models.text.normalize import normalize_all

if TYPE_CHECKING:
    from driftline.models.artifacts import ArtifactMeta

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
