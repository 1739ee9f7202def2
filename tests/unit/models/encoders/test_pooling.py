"""``mean_pool`` (``models.encoders``): padding positions do not count in the sentence embedding."""

from __future__ import annotations

import torch

from driftline.models.encoders import (
    mean_pool,
)


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0]]))
