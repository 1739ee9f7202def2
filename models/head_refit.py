"""Head refit: a new version that changes only the classifier head, trained on frozen features.

The fast response to a drift: seconds instead of minutes, because the encoder and adapter stay as they are;
the full LoRA update (``driftline.models.training``) follows when needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from cachetools import LRUCache
from torch import nn

from driftline.models.artifacts import ADAPTER_DIR, ArtifactMeta, read_meta
from driftline.models.classifier import Classifier, build_classifier, save_artifact
from driftline.models.datasets import Example, data_hash, label_counts
from driftline.models.tasks import TaskConfig
from driftline.models.training import WEIGHT_DECAY

FIT = "head"  # meta.train_config["fit"] of a head refit ("lora" for train_classifier)
STEPS = 300
LR = 3e-3


def encoder_key(artifact_dir: Path) -> str:
    """A hash of what an artifact's features depend on: versions with equal keys embed texts identically.

    Over the base encoder, the truncation and input normalisation (``meta.json``), the adapter's
    weights and its configuration as data (peft writes ``target_modules`` from a set, in an order that
    changes between processes), not over the model card.
    """
    adapter = Path(artifact_dir) / ADAPTER_DIR
    meta = read_meta(artifact_dir)
    digest = hashlib.sha256(json.dumps([meta.encoder, meta.max_length, meta.normalize_input]).encode())
    for path in sorted(adapter.rglob("*.safetensors")):
        digest.update(path.relative_to(adapter).as_posix().encode())
        digest.update(path.read_bytes())
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    config = {
        k: sorted(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else v
        for k, v in config.items()
    }
    digest.update(json.dumps(config, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def text_digest(text: str) -> str:
    """The key of one text's features (its SHA-1: the store never holds the texts themselves)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()  # a cache key, not a security boundary


class FeatureCache:
    """Pooled features per (encoder key, text), so the replay and test texts are embedded once.

    An updater refits heads on the same replay sample and scores on the same original test set
    every time; only the new feedback texts need the encoder. Bounded (least recently used out).

    With a ``directory``, an encoder's features also outlive the process: :meth:`save` writes them
    to ``<directory>/<key>.npz`` (digests and float32 vectors, read back without pickle), and the
    first lookup under a key loads that file, so a restarted updater (or the next demo run on the
    same cached adapter) starts warm instead of spending a minute of two busy cores re-embedding.
    Only the newest ``keep_files`` files stay.
    """

    def __init__(self, maxsize: int = 20_000, directory: Path | None = None, keep_files: int = 16) -> None:
        self._store: LRUCache[tuple[str, str], torch.Tensor] = LRUCache(maxsize)
        self.directory = Path(directory) if directory is not None else None
        self.keep_files = keep_files
        self._looked: set[str] = set()  # keys whose file was read (or found absent)

    def __len__(self) -> int:
        return len(self._store)

    def missing(self, key: str, texts: Sequence[str]) -> list[str]:
        """The distinct ``texts`` not cached under ``key``, in first-seen order."""
        self._load(key)
        return [text for text in dict.fromkeys(texts) if (key, text_digest(text)) not in self._store]

    def features(self, model: Classifier, key: str, texts: Sequence[str]) -> torch.Tensor:
        """``model.embed(texts)``, embedding only the texts not cached under ``key``."""
        self._load(key)
        digests = {text: text_digest(text) for text in dict.fromkeys(texts)}
        found = {text: self._store.get((key, digest)) for text, digest in digests.items()}
        missing = [text for text, vector in found.items() if vector is None]
        for text, vector in zip(missing, model.embed(missing), strict=True):
            found[text] = self._store[(key, digests[text])] = vector
        if not texts:
            return torch.zeros((0, model.head.in_features))
        return torch.stack([found[text] for text in texts])

    def save(self, key: str) -> Path | None:
        """Write ``key``'s cached features to the directory (atomically); None without a directory."""
        if self.directory is None:
            return None
        rows = [(digest, vector) for (k, digest), vector in list(self._store.items()) if k == key]
        if not rows:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{key}.npz"
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        digests = np.array([digest for digest, _ in rows])
        vectors = torch.stack([vector for _, vector in rows]).to(torch.float32).numpy()
        np.savez(tmp, digests=digests, vectors=vectors)
        os.replace(tmp, path)
        for old in sorted(self.directory.glob("*.npz"), key=lambda p: p.stat().st_mtime)[: -self.keep_files]:
            old.unlink(missing_ok=True)
        return path

    def _load(self, key: str) -> None:
        if self.directory is None or key in self._looked:
            return
        self._looked.add(key)
        try:
            with np.load(self.directory / f"{key}.npz", allow_pickle=False) as data:
                digests, vectors = data["digests"], data["vectors"]
        except (OSError, ValueError, KeyError):
            return  # absent or unreadable: those texts are embedded again
        if vectors.ndim != 2 or len(digests) != len(vectors) or vectors.dtype != np.float32:
            return
        for digest, vector in zip(digests.tolist(), torch.from_numpy(vectors), strict=True):
            self._store.setdefault((key, str(digest)), vector)


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
