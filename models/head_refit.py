"""Head refit: a new version that changes only the classifier head, trained on frozen features.

The fast response to a drift. When a class appears (or moves), the encoder with its LoRA adapter
usually still separates it: what is wrong is the head, which never learned to name it. Refitting
the head alone needs one forward pass per training text (no backward pass through the encoder) and
then a few hundred optimiser steps on a small matrix, so a candidate is ready in seconds on two
cores instead of minutes; the full LoRA update (``models.training.train_classifier``) follows on
the updater's regular schedule, or at once when the refit alone is not good enough.

The artifact has the parent's adapter unchanged and a new ``head.safetensors``, so it exports,
hashes, serves and rolls back like any other version. Labels appended since the parent grow the
head first (``models.classifier.grow_head``: imprinted from their examples), exactly as in
LoRA training. Classes are weighted by inverse frequency: a freshly seen class has far fewer
examples than the replayed old ones, and the point of the refit is to learn it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from cachetools import LRUCache
from torch import nn

from driftline.models.artifacts import ADAPTER_DIR, ArtifactMeta, read_meta
from driftline.models.classifier import Classifier, build_classifier, save_artifact
from driftline.models.datasets import Example, data_hash, label_counts
from driftline.models.tasks import TaskConfig

FIT = "head"  # meta.train_config["fit"] of a head refit ("lora" for train_classifier)
STEPS = 300
LR = 3e-3
WEIGHT_DECAY = 0.01


def encoder_key(artifact_dir: Path) -> str:
    """A hash of an artifact's adapter: versions with equal keys embed texts identically.

    Over the adapter's weights and its configuration as data (peft writes ``target_modules`` from
    a set, in an order that changes between processes), not over the model card.
    """
    adapter = Path(artifact_dir) / ADAPTER_DIR
    digest = hashlib.sha256()
    for path in sorted(adapter.rglob("*.safetensors")):
        digest.update(path.relative_to(adapter).as_posix().encode())
        digest.update(path.read_bytes())
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    config = {k: sorted(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else v
              for k, v in config.items()}  # fmt: skip
    digest.update(json.dumps(config, sort_keys=True).encode())
    return digest.hexdigest()[:16]


class FeatureCache:
    """Pooled features per (encoder key, text), so the replay and test texts are embedded once.

    An updater refits heads on the same replay sample and scores on the same original test set
    every time; only the new feedback texts need the encoder. Bounded (least recently used out).
    """

    def __init__(self, maxsize: int = 20_000) -> None:
        self._store: LRUCache[tuple[str, str], torch.Tensor] = LRUCache(maxsize)

    def __len__(self) -> int:
        return len(self._store)

    def missing(self, key: str, texts: Sequence[str]) -> list[str]:
        """The distinct ``texts`` not cached under ``key``, in first-seen order."""
        return [text for text in dict.fromkeys(texts) if (key, text) not in self._store]

    def features(self, model: Classifier, key: str, texts: Sequence[str]) -> torch.Tensor:
        """``model.embed(texts)``, embedding only the texts not cached under ``key``."""
        found = {text: self._store.get((key, text)) for text in dict.fromkeys(texts)}
        missing = [text for text, vector in found.items() if vector is None]
        for text, vector in zip(missing, model.embed(missing), strict=True):
            found[text] = self._store[(key, text)] = vector
        if not texts:
            return torch.zeros((0, model.head.in_features))
        return torch.stack([found[text] for text in texts])


def fit_head(
    head: nn.Linear, features: torch.Tensor, targets: torch.Tensor, *, steps: int, lr: float
) -> float:
    """Train ``head`` in place on ``features`` (class-balanced cross-entropy, full batch); final loss."""
    counts = torch.bincount(targets, minlength=head.out_features).float()
    weight = torch.where(counts > 0, counts.sum() / (counts.clamp(min=1) * int((counts > 0).sum())), 0.0)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
    loss = torch.tensor(float("nan"))
    head.train()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(head(features), targets, weight=weight)
        loss.backward()
        optimizer.step()
    head.eval()
    return float(loss.detach())


def refit_head(
    task: TaskConfig,
    train: list[Example],
    *,
    parent: Path,
    out_dir: Path,
    steps: int = STEPS,
    lr: float = LR,
    seed: int = 0,
    threads: int = 2,
    extra_config: dict[str, object] | None = None,
    cache: FeatureCache | None = None,
) -> ArtifactMeta:
    """Refit the head of ``parent`` on ``train`` (encoder and adapter frozen); save it to ``out_dir``.

    ``task.labels`` may extend the parent's (the head grows, imprinted from ``train``); training
    labels must be among them. ``out_dir`` must not exist yet; the save is atomic. ``cache``: reuse
    features of texts embedded before by the same encoder (``FeatureCache``).
    """
    if not train:
        raise ValueError("refit_head() needs at least one training example")
    unknown = sorted({e.label for e in train} - set(task.labels))
    if unknown:
        raise ValueError(f"training labels {unknown} are not declared for task {task.name!r} ({task.labels})")
    if Path(out_dir).exists():
        raise FileExistsError(f"artifact folder {out_dir} already exists")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    parent_meta = read_meta(parent)
    grown = [label for label in task.labels if label not in parent_meta.labels]
    new_examples = {label: [e.text for e in train if e.label == label] for label in grown}
    started = time.perf_counter()
    model = build_classifier(
        task, parent=parent, max_length=parent_meta.max_length, new_examples=new_examples or None
    )
    texts = [e.text for e in train]
    cache = cache if cache is not None else FeatureCache()
    features = cache.features(model, encoder_key(parent), texts)
    embed_seconds = time.perf_counter() - started
    index = {label: i for i, label in enumerate(model.labels)}
    targets = torch.tensor([index[e.label] for e in train], dtype=torch.long)
    with torch.enable_grad():
        model.head.weight.requires_grad_(True)
        model.head.bias.requires_grad_(True)
        final_loss = fit_head(model.head, features, targets, steps=steps, lr=lr)
    train_seconds = time.perf_counter() - started
    train_config: dict[str, object] = {
        "fit": FIT,
        "steps": steps,
        "lr": lr,
        "seed": seed,
        "threads": threads,
        "n_train": len(train),
        "train_label_counts": dict(sorted(label_counts(train).items())),
        "final_loss": round(final_loss, 5),
        "embed_seconds": round(embed_seconds, 2),
        "train_seconds": round(train_seconds, 2),
        "grown_labels": grown,
        **(extra_config or {}),
    }
    meta = ArtifactMeta(
        task=task.name,
        labels=list(model.labels),
        encoder=task.encoder,
        max_length=model.max_length,
        normalize_input=model.normalize_input,
        data_hash=data_hash(train),
        parent=parent_meta.adapter_hash,
        metrics={},
        train_config=train_config,
    )
    return save_artifact(model, meta, Path(out_dir))
