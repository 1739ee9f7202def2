"""Pretrained sentence encoders, loaded offline from installed packages.

Public API (other areas code against exactly this)::

    load_encoder(name) -> EncoderBundle   # cached per process; fresh=True for a private copy
    encoder_path(name) -> Path            # save_pretrained folder (converted once for e5_small)
    mean_pool(last_hidden_state, attention_mask) -> Tensor
    embed(bundle, texts, max_length=256, normalize=True) -> Tensor

Registry keys match ``encoder:`` in ``models/tasks.yaml``: ``minilm`` and ``e5_small``.
"""

from driftline.models.encoders.pooling import embed, mean_pool
from driftline.models.encoders.registry import (
    REGISTRY,
    EncoderBundle,
    EncoderSpec,
    UnknownEncoderError,
    encoder_path,
    load_encoder,
)

__all__ = [
    "REGISTRY",
    "EncoderBundle",
    "EncoderSpec",
    "UnknownEncoderError",
    "embed",
    "encoder_path",
    "load_encoder",
    "mean_pool",
]
