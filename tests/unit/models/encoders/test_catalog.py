"""The encoder catalog (``models.encoders``): every task's encoder is registered, unknown names fail
clearly, minilm loads offline with unit-norm, meaningful embeddings, exposes its LoRA targets, and
each load is a private copy.
"""

from __future__ import annotations

import pytest
import torch

from driftline.models.encoders import (
    ENCODERS,
    UnknownEncoderError,
    embed,
    encoder_path,
    load_encoder,
)
from driftline.models.tasks import load_tasks


def test_registry_covers_every_task_encoder() -> None:
    assert {task.encoder for task in load_tasks().values()} <= set(ENCODERS)


def test_unknown_encoder_is_a_clear_error() -> None:
    with pytest.raises(UnknownEncoderError, match="registered encoders"):
        load_encoder("no_such_encoder")


def test_minilm_offline_unit_norm_and_semantic_order() -> None:
    bundle = load_encoder("minilm")
    assert bundle.path == encoder_path("minilm")
    assert bundle.hidden_size == 384 and bundle.pooling == "mean"
    assert not bundle.model.training
    assert load_encoder("minilm") is bundle  # cached per process
    texts = [
        "The central bank raised interest rates to fight inflation.",
        "Interest rates were increased by the central bank to curb rising prices.",
        "The striker scored twice in the second half of the football match.",
    ]
    emb = embed(bundle, texts)
    assert emb.shape == (3, 384) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2] + 0.3
    assert sims[0, 1] > sims[1, 2] + 0.3


@pytest.mark.parametrize("name", ["minilm", "e5_small"])
def test_lora_target_modules_exist(name: str) -> None:
    """Training puts peft LoRA on ``query``/``value``: every layer must expose them as Linear."""
    model = load_encoder(name).model
    layers = model.config.num_hidden_layers
    for target in ("query", "value"):
        hits = [m for n, m in model.named_modules() if n.endswith(f".{target}")]
        assert len(hits) == layers and all(isinstance(m, torch.nn.Linear) for m in hits)


def test_fresh_load_is_a_private_copy() -> None:
    cached = load_encoder("minilm")
    fresh = load_encoder("minilm", fresh=True)
    assert fresh.model is not cached.model
    with torch.no_grad():
        fresh.model.encoder.layer[0].attention.self.query.weight.zero_()
    assert cached.model.encoder.layer[0].attention.self.query.weight.abs().sum() > 0
