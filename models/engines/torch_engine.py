"""``torch-fp32``: the PyTorch classifier (LoRA merged), the reference every other engine is held to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from driftline.models.classifier import Classifier, load_classifier


class TorchEngine:
    """The artifact's :class:`Classifier` in eval mode; also gives its tokenizer to the selection."""

    name = "torch-fp32"

    def __init__(self, version_dir: Path, num_threads: int = 0) -> None:
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        self.classifier: Classifier = load_classifier(version_dir)

    @torch.inference_mode()
    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Softmax of the classifier's logits, float32 ``[batch, n_labels]``."""
        logits = self.classifier(
            torch.from_numpy(np.asarray(input_ids, dtype=np.int64)),
            torch.from_numpy(np.asarray(attention_mask, dtype=np.int64)),
        )
        return torch.softmax(logits, dim=-1).numpy().astype(np.float32, copy=False)
