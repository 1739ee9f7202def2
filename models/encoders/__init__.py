"""Pretrained sentence encoders, loaded offline from installed packages.

Public API: ``load_encoder``, ``encoder_path``, ``tokenizer_file``, ``mean_pool``, ``embed``; the torch parts
are imported on first use, so a worker without torch can still find a tokenizer file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from driftline.models.encoders.catalog import (
    ENCODERS,
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
    "ENCODERS",
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
