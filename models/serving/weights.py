"""Load an exported version's torch weights: encoder with the LoRA adapter merged, and the Linear head.

The same loading as the serving runner's, in a module of its own so that code computing from the
weights (the explainer) does not depend on the serving path, which may run another engine. The
encoder named in ``meta.json`` is loaded fresh (``load_encoder(..., fresh=True)``, a private copy,
because merging mutates it), the peft LoRA adapter is applied and merged into the base weights with
``merge_and_unload`` (a plain encoder, no adapter indirection per forward pass), and the head is
read from ``head.safetensors``. The head is applied to masked mean pooling, exactly as in training.
Every parameter is frozen: callers that need gradients take them with respect to the inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from driftline.models.artifacts import ADAPTER_DIR, HEAD_FILE, ArtifactMeta, read_meta
from driftline.models.encoders import load_encoder


def configure_threads(num_threads: int | None) -> int:
    """Set torch's intra-op thread count when ``num_threads`` is positive; returns the count in use.

    A process sharing the machine with Triton instances and workers should not take every core.
    """
    if num_threads and num_threads > 0:
        torch.set_num_threads(num_threads)
    return torch.get_num_threads()


def load_head(path: Path, hidden_size: int, num_labels: int) -> torch.nn.Linear:
    """Read the Linear head, tolerating a key prefix (``weight`` or ``head.weight``, ``classifier.*``)."""
    tensors = load_file(str(path))
    weight = next((t for k, t in tensors.items() if k.endswith("weight") and t.dim() == 2), None)
    bias = next((t for k, t in tensors.items() if k.endswith("bias") and t.dim() == 1), None)
    if weight is None or tuple(weight.shape) != (num_labels, hidden_size):
        shapes = {k: tuple(t.shape) for k, t in tensors.items()}
        raise ValueError(f"{path}: expected a ({num_labels}, {hidden_size}) weight, found {shapes}")
    head = torch.nn.Linear(hidden_size, num_labels, bias=bias is not None)
    with torch.no_grad():
        head.weight.copy_(weight.float())
        if bias is not None:
            head.bias.copy_(bias.float())
    return head.eval()


@dataclass(frozen=True)
class MergedClassifier:
    """One version's weights, ready to run: tokenizer, merged encoder, head, and what meta.json says."""

    meta: ArtifactMeta
    tokenizer: Any
    encoder: torch.nn.Module
    head: torch.nn.Linear
    device: torch.device

    @property
    def labels(self) -> list[str]:
        """Label names in logit order."""
        return list(self.meta.labels)


def load_merged(version_dir: str | Path, device: str = "cpu") -> MergedClassifier:
    """The classifier of an artifact or exported version folder (meta.json, adapter/, head.safetensors)."""
    from peft import PeftModel

    folder = Path(version_dir)
    meta = read_meta(folder)
    bundle = load_encoder(meta.encoder, fresh=True)
    target = torch.device(device)
    peft_model = PeftModel.from_pretrained(bundle.model, str(folder / ADAPTER_DIR))
    encoder = peft_model.merge_and_unload().to(target).eval()
    head = load_head(folder / HEAD_FILE, bundle.hidden_size, len(meta.labels)).to(target)
    for module in (encoder, head):
        for param in module.parameters():
            param.requires_grad_(False)
    return MergedClassifier(meta=meta, tokenizer=bundle.tokenizer, encoder=encoder, head=head, device=target)
