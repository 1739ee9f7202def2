"""The classifier module: encoder with LoRA, mean pooling and a linear head; build, load and save it.

The one PyTorch reader and writer of the artifact format: :func:`build_classifier`,
:func:`load_classifier`, :func:`save_artifact` (and :func:`grow_head` for new labels).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn

from driftline.models.artifacts import ADAPTER_DIR, HEAD_FILE, ArtifactMeta, read_meta, write_meta
from driftline.models.encoders import load_encoder, mean_pool
from driftline.models.tasks import TaskConfig
from driftline.models.text.codec import normalize_all


class Classifier(nn.Module):
    """Encoder + mean pooling + linear head, with the tokenizer and label names it was trained with."""

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Linear,
        tokenizer: Any,
        labels: Sequence[str],
        *,
        encoder_name: str,
        max_length: int,
        normalize_input: bool = False,
    ) -> None:
        super().__init__()
        if head.out_features != len(labels):
            raise ValueError(f"head has {head.out_features} outputs but there are {len(labels)} labels")
        self.encoder = encoder
        self.head = head
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.encoder_name = encoder_name
        self.max_length = max_length
        self.normalize_input = normalize_input

    def prepare(self, texts: Sequence[str]) -> list[str]:
        """The texts as the encoder sees them: normalized when the classifier was trained that way."""
        return normalize_all(texts) if self.normalize_input else list(texts)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean-pooled sentence vector, ``(batch, hidden)``, before the head."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return mean_pool(out.last_hidden_state, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, n_labels)``; the head runs in fp32 even under autocast."""
        pooled = self.pooled(input_ids, attention_mask)
        return self.head(pooled.float())

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Padded tensors for ``texts`` (truncated to ``max_length``, default the trained length)."""
        enc = self.tokenizer(
            self.prepare(texts),
            padding=True,
            truncation=True,
            max_length=max_length or self.max_length,
            return_tensors="pt",
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    @torch.inference_mode()
    def predict_proba(
        self, texts: Sequence[str], max_length: int | None = None, batch_size: int = 32
    ) -> np.ndarray:
        """Class probabilities ``(len(texts), n_labels)`` float32, columns in ``self.labels`` order.

        Texts are processed in length-sorted batches (little padding) and returned in input order.
        """
        if isinstance(texts, str):
            raise TypeError("predict_proba() takes a sequence of texts, not a single string")
        if len(texts) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        was_training = self.training
        self.eval()
        limit = max_length or self.max_length
        ids = self.tokenizer(self.prepare(texts), truncation=True, max_length=limit)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = np.zeros((len(ids), len(self.labels)), dtype=np.float32)
        pad_id = self.tokenizer.pad_token_id or 0
        try:
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                input_ids, mask = pad_batch([ids[i] for i in chunk], pad_id)
                probs = torch.softmax(self(input_ids, mask), dim=-1)
                out[chunk] = probs.numpy()
        finally:
            self.train(was_training)
        return out

    def predict(self, texts: Sequence[str], max_length: int | None = None) -> list[str]:
        """The most probable label of each text."""
        probs = self.predict_proba(texts, max_length=max_length)
        return [self.labels[i] for i in probs.argmax(axis=1)]

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """What the head sees for each text, ``(len(texts), hidden)`` float32, in input order.

        Length-sorted batches (little padding), put back in order. ``no_grad``, not inference mode:
        a head refit trains on these features.
        """
        out = torch.zeros((len(texts), self.head.in_features))
        if not texts:
            return out
        was_training = self.training
        self.eval()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        try:
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch = self.tokenize([texts[i] for i in chunk])
                out[chunk] = self.pooled(batch["input_ids"], batch["attention_mask"]).float()
        finally:
            self.train(was_training)
        return out

    def mean_embedding(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """The mean of the texts' pooled vectors, ``(hidden,)`` (what the head sees)."""
        if not texts:
            raise ValueError("mean_embedding() needs at least one text")
        return self.embed(texts, batch_size).mean(dim=0)

    def merge_lora(self) -> Classifier:
        """Fold the LoRA deltas into the encoder weights (inference only: no more adapter switching)."""
        if isinstance(self.encoder, PeftModel):
            self.encoder = self.encoder.merge_and_unload()
        return self


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists right-padded to the longest: ``(input_ids, attention_mask)``, both long."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return input_ids, mask


def _lora_config(task: TaskConfig) -> LoraConfig:
    return LoraConfig(
        r=task.lora.r,
        lora_alpha=task.lora.alpha,
        lora_dropout=task.lora.dropout,
        target_modules=list(task.lora.target_modules),
        bias="none",
    )


def build_classifier(
    task: TaskConfig,
    parent: Path | None = None,
    max_length: int | None = None,
    new_examples: Mapping[str, Sequence[str]] | None = None,
) -> Classifier:
    """A trainable classifier for ``task``: fresh LoRA + zero-mean head, or continued from ``parent``.

    When ``task.labels`` extends the parent's labels, the head grows by the new labels, each imprinted
    from the texts ``new_examples[label]`` (``ValueError`` when a new label has none).
    """
    bundle = load_encoder(task.encoder, fresh=True)  # private copy: peft injects layers in place
    if parent is None:
        encoder = get_peft_model(bundle.model, _lora_config(task))
        head = nn.Linear(bundle.hidden_size, len(task.labels))
        nn.init.normal_(head.weight, std=0.02)
        nn.init.zeros_(head.bias)
    else:
        parent_meta = read_meta(parent)
        _check_parent(task, parent_meta)
        encoder = PeftModel.from_pretrained(bundle.model, parent / ADAPTER_DIR, is_trainable=True)
        head = nn.Linear(bundle.hidden_size, len(parent_meta.labels))
        head.load_state_dict(load_file(parent / HEAD_FILE))
    model = Classifier(
        encoder,
        head,
        bundle.tokenizer,
        task.labels[: head.out_features],
        encoder_name=task.encoder,
        max_length=max_length or task.max_length,
        normalize_input=task.normalize_input,
    )
    added = task.labels[head.out_features :]
    if added:
        missing = [label for label in added if not (new_examples or {}).get(label)]
        if missing:
            raise ValueError(f"new labels {missing} need example texts to imprint the grown head from")
        vectors = [model.mean_embedding(list(new_examples[label])) for label in added]  # type: ignore[index]
        model.head = grow_head(model.head, vectors)
        model.labels = list(task.labels)
    return model


def grow_head(head: nn.Linear, vectors: Sequence[torch.Tensor]) -> nn.Linear:
    """``head`` with one more output per vector, the old outputs unchanged (weight imprinting).

    A new row is its class's mean embedding, rescaled to the mean norm of the existing rows; its bias
    is the mean existing bias. The new class then scores its own examples about as high as a trained
    class scores typical inputs, and training refines it from there instead of from noise.
    """
    with torch.no_grad():
        old_w, old_b = head.weight.detach().float(), head.bias.detach().float()
        scale = float(old_w.norm(dim=1).mean())
        rows = [v.float() / max(float(v.norm()), 1e-12) * scale for v in vectors]
        grown = nn.Linear(head.in_features, head.out_features + len(rows))
        grown.weight.copy_(torch.cat([old_w, torch.stack(rows)]))
        grown.bias.copy_(torch.cat([old_b, old_b.mean().repeat(len(rows))]))
    return grown


def _check_parent(task: TaskConfig, meta: ArtifactMeta) -> None:
    grows = list(task.labels[: len(meta.labels)]) == list(meta.labels)  # new labels appended
    if meta.task != task.name or meta.encoder != task.encoder or not grows:
        raise ValueError(
            f"parent artifact ({meta.task}, {meta.encoder}, {meta.labels}) does not match task "
            f"({task.name}, {task.encoder}, {task.labels}): labels may only be appended"
        )


def load_classifier(artifact_dir: Path | str, *, merge: bool = True) -> Classifier:
    """The classifier stored in ``artifact_dir``, in eval mode (LoRA merged unless ``merge=False``)."""
    artifact_dir = Path(artifact_dir)
    meta = read_meta(artifact_dir)
    bundle = load_encoder(meta.encoder, fresh=True)
    encoder = PeftModel.from_pretrained(bundle.model, artifact_dir / ADAPTER_DIR, is_trainable=False)
    head = nn.Linear(bundle.hidden_size, len(meta.labels))
    head.load_state_dict(load_file(artifact_dir / HEAD_FILE))
    model = Classifier(
        encoder,
        head,
        bundle.tokenizer,
        meta.labels,
        encoder_name=meta.encoder,
        max_length=meta.max_length,
        normalize_input=meta.normalize_input,
    )
    if merge:
        model.merge_lora()
    return model.eval()


def save_artifact(model: Classifier, meta: ArtifactMeta, out_dir: Path) -> ArtifactMeta:
    """Write adapter, head and meta to ``out_dir`` via a temporary sibling and an atomic rename."""
    if not isinstance(model.encoder, PeftModel):
        raise TypeError("save_artifact() needs an unmerged (PeftModel) encoder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        # Record the registry key, not this machine's path, so the adapter (and its hash) is portable.
        for config in model.encoder.peft_config.values():
            config.base_model_name_or_path = model.encoder_name
        with warnings.catch_warnings():
            # peft looks for the base model's config.json under the (now symbolic) name to detect a
            # resized vocabulary; ours never is, so its "could not find a config file" is noise.
            warnings.filterwarnings("ignore", message="Could not find a config file")
            model.encoder.save_pretrained(tmp / ADAPTER_DIR)
        head = {k: v.detach().contiguous().cpu() for k, v in model.head.state_dict().items()}
        save_file(head, tmp / HEAD_FILE, metadata={"labels": json.dumps(model.labels)})
        meta = write_meta(tmp, meta)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta
