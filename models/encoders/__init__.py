"""Pretrained sentence encoders, loaded offline from installed packages.

Public API (other areas code against exactly this)::

    load_encoder(name) -> EncoderBundle   # cached per process; fresh=True for a private copy
    encoder_path(name) -> Path            # save_pretrained folder (converted once for e5_small)
    tokenizer_file(name) -> Path          # its tokenizer.json (what serving clients encode with)
    mean_pool(last_hidden_state, attention_mask) -> Tensor
    embed(bundle, texts, max_length=256, normalize=True) -> Tensor

Registry keys match ``encoder:`` in ``models/tasks.yaml``: ``minilm`` and ``e5_small``. Names are
resolved lazily, so a process that only needs a tokenizer file does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from driftline.models.encoders.pooling import embed, mean_pool
    from driftline.models.encoders.registry import (
        REGISTRY,
        EncoderBundle,
        EncoderSpec,
        UnknownEncoderError,
        encoder_path,
        load_encoder,
        tokenizer_file,
    )

_HOMES = {
    "embed": "pooling",
    "mean_pool": "pooling",
    "REGISTRY": "registry",
    "EncoderBundle": "registry",
    "EncoderSpec": "registry",
    "UnknownEncoderError": "registry",
    "encoder_path": "registry",
    "load_encoder": "registry",
    "tokenizer_file": "registry",
}
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


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"driftline.models.encoders.{_HOMES[name]}"), name)
    raise AttributeError(name)
