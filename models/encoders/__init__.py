"""Pretrained sentence encoders, loaded offline from installed packages.

Public API (other areas code against exactly this)::

    load_encoder(name) -> EncoderBundle   # cached per process; fresh=True for a private copy
    encoder_path(name) -> Path            # save_pretrained folder (converted once for e5_small)
    tokenizer_file(name) -> Path          # the encoder's tokenizer.json (what a worker reads)
    mean_pool(last_hidden_state, attention_mask) -> Tensor
    embed(bundle, texts, max_length=256, normalize=True) -> Tensor

Registry keys match ``encoder:`` in ``models/tasks.yaml``: ``minilm`` and ``e5_small``.

``mean_pool`` and ``embed`` are torch code, imported on first use: a worker imports this package to
find a tokenizer file and has no torch (compose/requirements/worker.txt). The imports are literal so
that tests/compose/test_image_requirements.py follows them to what each image needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from driftline.models.encoders.catalog import (
    REGISTRY,
    EncoderBundle,
    EncoderSpec,
    UnknownEncoderError,
    encoder_path,
    load_encoder,
    tokenizer_file,
)

if TYPE_CHECKING:
    from driftline.models.encoders.pooling import embed, mean_pool

__all__ = [
    "REGISTRY",
    "EncoderBundle",
    "EncoderSpec",
    "UnknownEncoderError",
    "embed",
    "encoder_path",
    "load_encoder",
    "mean_pool",
    "tokenizer_file",
]


def __getattr__(name: str) -> Any:
    """``embed`` and ``mean_pool`` from ``pooling`` (torch), imported when first asked for."""
    if name in ("embed", "mean_pool"):
        from driftline.models.encoders import pooling

        return getattr(pooling, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
