"""LoRA fine-tuning of a sentence encoder + linear head, evaluation, and loading trained artifacts.

The classifier is ``encoder (peft LoRA on query/value) -> mean_pool -> Linear(hidden, n_labels)``.
Training, serving (Triton python backend) and the online-learning updater all go through this module:

* :func:`train_classifier` trains from scratch or, with ``parent=``, continues from an existing
  artifact's adapter and head (the incremental update path), and writes an artifact folder
  (``models/artifacts.py`` format) atomically;
* :func:`load_classifier` loads an artifact into a :class:`Classifier` (eval mode, LoRA optionally
  merged into the encoder weights for faster inference) with :meth:`Classifier.predict_proba`;
* :func:`evaluate` scores an artifact or a loaded classifier (accuracy, macro-F1, confusion);
* :func:`get_or_train` reuses an artifact trained with the same task config, data and options, so the
  demo and CI do not retrain on every run.

CPU speed matters (the targets are a few minutes on two cores), hence: texts are tokenised once,
batches are length-bucketed with dynamic padding (short reviews are not padded to 128 tokens), and on
CPUs with native bfloat16 (AVX512-BF16/AMX) the forward/backward pass runs under bf16 autocast while
weights, optimiser state and the saved artifact stay fp32.

Head file format (``head.safetensors``): tensors ``weight`` ``(n_labels, hidden)`` and ``bias``
``(n_labels,)``; row ``i`` scores ``meta.labels[i]``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn

from driftline.models.artifacts import (
    ADAPTER_DIR,
    HEAD_FILE,
    META_FILE,
    ArtifactMeta,
    artifacts_root,
    read_meta,
    write_meta,
)
from driftline.models.datasets import (
    Example,
    data_hash,
    exclude_labels,
    label_counts,
    limit_per_class,
    load_dataset,
)
from driftline.models.encoders import load_encoder, mean_pool
from driftline.models.metrics import classification_report
from driftline.models.robustness import augment, normalize_all
from driftline.models.tasks import TaskConfig

# Bump when the training recipe changes in a way that should invalidate cached artifacts.
RECIPE_VERSION = 1
DEFAULT_THREADS = 2
WARMUP_FRACTION = 0.06
WEIGHT_DECAY = 0.01
BUCKET_BATCHES = 32  # batches per shuffled bucket: sorted by length inside, shuffled across


def _cpu_has_native_bf16() -> bool:
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool((probe and probe()) or (amx and amx()))
    except Exception:  # private probes; absence just means "no"
        return False


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
                input_ids, mask = _pad([ids[i] for i in chunk], pad_id)
                probs = torch.softmax(self(input_ids, mask), dim=-1)
                out[chunk] = probs.numpy()
        finally:
            self.train(was_training)
        return out

    def predict(self, texts: Sequence[str], max_length: int | None = None) -> list[str]:
        probs = self.predict_proba(texts, max_length=max_length)
        return [self.labels[i] for i in probs.argmax(axis=1)]

    def merge_lora(self) -> Classifier:
        """Fold the LoRA deltas into the encoder weights (inference only: no more adapter switching)."""
        if isinstance(self.encoder, PeftModel):
            self.encoder = self.encoder.merge_and_unload()
        return self


def _pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return input_ids, mask


def _bucketed_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of index batches: shuffled, then length-sorted within buckets, batches shuffled.

    Similar lengths per batch keep dynamic padding small; the bucket shuffle keeps epochs random and
    stops whole batches from being one label (lengths correlate with labels in some corpora).
    """
    indices = list(range(len(lengths)))
    rng.shuffle(indices)
    bucket = batch_size * BUCKET_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(indices), bucket):
        part = sorted(indices[start : start + bucket], key=lambda i: lengths[i])
        batches.extend(part[j : j + batch_size] for j in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def _lora_config(task: TaskConfig) -> LoraConfig:
    return LoraConfig(
        r=task.lora.r,
        lora_alpha=task.lora.alpha,
        lora_dropout=task.lora.dropout,
        target_modules=list(task.lora.target_modules),
        bias="none",
    )


def build_classifier(
    task: TaskConfig, parent: Path | None = None, max_length: int | None = None
) -> Classifier:
    """A trainable classifier for ``task``: fresh LoRA + zero-mean head, or continued from ``parent``."""
    bundle = load_encoder(task.encoder, fresh=True)  # private copy: peft injects layers in place
    head = nn.Linear(bundle.hidden_size, len(task.labels))
    if parent is None:
        encoder = get_peft_model(bundle.model, _lora_config(task))
        nn.init.normal_(head.weight, std=0.02)
        nn.init.zeros_(head.bias)
    else:
        parent_meta = read_meta(parent)
        _check_parent(task, parent_meta)
        encoder = PeftModel.from_pretrained(bundle.model, parent / ADAPTER_DIR, is_trainable=True)
        head.load_state_dict(load_file(parent / HEAD_FILE))
    return Classifier(
        encoder,
        head,
        bundle.tokenizer,
        task.labels,
        encoder_name=task.encoder,
        max_length=max_length or task.max_length,
        normalize_input=task.normalize_input,
    )


def _check_parent(task: TaskConfig, meta: ArtifactMeta) -> None:
    if meta.task != task.name or meta.encoder != task.encoder or list(meta.labels) != list(task.labels):
        raise ValueError(
            f"parent artifact ({meta.task}, {meta.encoder}, {meta.labels}) does not match task "
            f"({task.name}, {task.encoder}, {task.labels})"
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


def evaluate(
    artifact_dir_or_model: Path | str | Classifier,
    examples: Sequence[Example],
    *,
    max_length: int | None = None,
    batch_size: int = 32,
) -> dict[str, object]:
    """Accuracy, macro-F1, per-class scores and confusion matrix of a classifier on ``examples``."""
    model = (
        artifact_dir_or_model
        if isinstance(artifact_dir_or_model, Classifier)
        else load_classifier(artifact_dir_or_model)
    )
    if not examples:
        raise ValueError("evaluate() needs at least one example")
    unknown = sorted({e.label for e in examples} - set(model.labels))
    if unknown:
        raise ValueError(
            f"examples carry labels {unknown} that the classifier does not know ({model.labels})"
        )
    started = time.perf_counter()
    probs = model.predict_proba([e.text for e in examples], max_length=max_length, batch_size=batch_size)
    predictions = [model.labels[i] for i in probs.argmax(axis=1)]
    report = classification_report([e.label for e in examples], predictions, model.labels)
    report["eval_seconds"] = round(time.perf_counter() - started, 2)
    return report


@dataclass
class _Encoded:
    ids: list[list[int]]
    targets: list[int]


def _encode(model: Classifier, examples: Sequence[Example], max_length: int) -> _Encoded:
    index = {label: i for i, label in enumerate(model.labels)}
    texts = model.prepare([e.text for e in examples])
    ids = model.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    return _Encoded(ids=list(ids), targets=[index[e.label] for e in examples])


def _schedule(total_steps: int) -> Callable[[int], float]:
    warmup = max(1, int(total_steps * WARMUP_FRACTION))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.1f} ex/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def train_classifier(
    task: TaskConfig,
    train: list[Example],
    evaluate_on: list[Example] | None,
    *,
    parent: Path | None = None,
    out_dir: Path,
    epochs: int | None = None,
    max_steps: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    progress: bool = True,
    max_length: int | None = None,
    lr: float | None = None,
    head_lr: float | None = None,
    bf16: bool | None = None,
    threads: int = DEFAULT_THREADS,
    extra_config: dict[str, object] | None = None,
) -> ArtifactMeta:
    """Fine-tune a LoRA classifier on ``train`` and save it as an artifact in ``out_dir``.

    ``parent`` continues from that artifact's adapter and head (incremental update; meta.parent records
    the parent's ``adapter_hash``). ``max_steps`` caps the optimiser steps (cycling epochs if needed);
    otherwise ``epochs`` (default from the task) passes are made. Training labels must be a subset of
    the task's labels; the head always has one output per task label, so a class missing from
    ``train`` (``--exclude-label``) is still a valid output, just never learned. ``evaluate_on`` is
    scored after training and stored as ``meta.metrics``. ``extra_config`` is merged into
    ``meta.train_config`` (e.g. the data options that produced ``train``).

    The artifact is written to a temporary sibling folder and renamed into place, so a reader (export,
    cache lookup) never sees a half-written artifact. ``out_dir`` must not exist yet.
    """
    if not train:
        raise ValueError("train_classifier() needs at least one training example")
    unknown = sorted({e.label for e in train} - set(task.labels))
    if unknown:
        raise ValueError(f"training labels {unknown} are not declared for task {task.name!r} ({task.labels})")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"artifact folder {out_dir} already exists")
    epochs = epochs if epochs is not None else task.train.epochs
    batch_size = batch_size or task.train.batch_size
    max_length = max_length or task.max_length
    lr = lr if lr is not None else task.train.lr
    head_lr = head_lr if head_lr is not None else task.train.head_lr
    bf16 = _cpu_has_native_bf16() if bf16 is None else bf16
    if epochs < 1 and not max_steps:
        raise ValueError("need epochs >= 1 or max_steps >= 1")

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    n_augmented = 0
    if task.train.augment_fraction > 0:
        sample = rng.sample(train, round(len(train) * task.train.augment_fraction))
        noisy = augment(sample, kinds=("typos", "mixed"), seed=seed)
        n_augmented = len(noisy)
        train = list(train) + noisy
    parent_meta = read_meta(parent) if parent is not None else None
    model = build_classifier(task, parent=parent, max_length=max_length)
    encoded = _encode(model, train, max_length)
    lengths = [len(ids) for ids in encoded.ids]

    steps_per_epoch = math.ceil(len(train) / batch_size)
    total_steps = max_steps if max_steps else epochs * steps_per_epoch
    lora_params = [p for n, p in model.encoder.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": lora_params, "lr": lr},
            {"params": list(model.head.parameters()), "lr": head_lr},
        ],
        weight_decay=WEIGHT_DECAY,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total_steps))
    loss_fn = nn.CrossEntropyLoss()
    pad_id = model.tokenizer.pad_token_id or 0

    model.train()
    step, seen, running, last_loss = 0, 0, None, float("nan")
    started = time.perf_counter()
    description = f"train {task.name}" + (" (incremental)" if parent is not None else "")
    with _progress(progress) as bar:
        bar_task = bar.add_task(description, total=total_steps, loss=float("nan"), rate=0.0)
        while step < total_steps:
            for batch in _bucketed_batches(lengths, batch_size, rng):
                if step >= total_steps:
                    break
                input_ids, mask = _pad([encoded.ids[i] for i in batch], pad_id)
                targets = torch.tensor([encoded.targets[i] for i in batch], dtype=torch.long)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    logits = model(input_ids, mask)
                loss = loss_fn(logits.float(), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(lora_params + list(model.head.parameters()), 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                seen += len(batch)
                last_loss = float(loss.detach())
                running = last_loss if running is None else 0.9 * running + 0.1 * last_loss
                rate = seen / max(1e-9, time.perf_counter() - started)
                bar.update(bar_task, advance=1, loss=running, rate=rate)
    train_seconds = time.perf_counter() - started

    model.eval()
    metrics: dict[str, object] = {}
    if evaluate_on:
        metrics = evaluate(model, evaluate_on, max_length=max_length)

    train_config: dict[str, object] = {
        "recipe_version": RECIPE_VERSION,
        "epochs": epochs if not max_steps else None,
        "max_steps": max_steps,
        "steps": step,
        "batch_size": batch_size,
        "lr": lr,
        "head_lr": head_lr,
        "lora": task.lora.model_dump(),
        "seed": seed,
        "bf16_autocast": bf16,
        "threads": threads,
        "n_train": len(train),
        "n_augmented": n_augmented,
        "train_label_counts": dict(sorted(label_counts(train).items())),
        "final_loss": round(running if running is not None else last_loss, 5),
        "train_seconds": round(train_seconds, 2),
        "examples_per_second": round(seen / max(1e-9, train_seconds), 2),
        "n_eval": len(evaluate_on or []),
        **(extra_config or {}),
    }
    meta = ArtifactMeta(
        task=task.name,
        labels=list(task.labels),
        encoder=task.encoder,
        max_length=max_length,
        normalize_input=model.normalize_input,
        data_hash=data_hash(train),
        parent=parent_meta.adapter_hash if parent_meta else None,
        metrics=metrics,
        train_config=train_config,
    )
    return save_artifact(model, meta, out_dir)


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


# --- cached "get or train" ------------------------------------------------------------------------


@dataclass
class TrainResult:
    artifact_dir: Path
    meta: ArtifactMeta
    reused: bool


def training_data(
    task: TaskConfig, *, exclude: Sequence[str] = (), limit: int | None = None, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """(train, test) examples for a task's dataset: train split filtered/limited, full test split."""
    dataset = load_dataset(task.dataset)
    undeclared = sorted(set(dataset.labels) - set(task.labels))
    if undeclared:
        raise ValueError(
            f"dataset {dataset.name!r} has labels {undeclared} not declared by task {task.name!r}"
        )
    bad = sorted(set(exclude) - set(task.labels))
    if bad:
        raise ValueError(f"cannot exclude unknown labels {bad}; task labels: {task.labels}")
    train = limit_per_class(exclude_labels(dataset.split("train"), exclude), limit, seed=seed)
    return train, dataset.split("test")


def cache_key(task: TaskConfig, train: Sequence[Example], options: dict[str, object]) -> str:
    payload = json.dumps(
        {
            "recipe": RECIPE_VERSION,
            "task": task.model_dump(mode="json"),
            "data": data_hash(train),
            "options": options,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def find_cached(task_name: str, key: str, root: Path | None = None) -> Path | None:
    """Newest complete artifact under ``root`` whose ``train_config.cache_key`` equals ``key``."""
    root = root or artifacts_root(task_name)
    if not root.is_dir():
        return None
    hits = []
    for meta_file in root.glob(f"*/{META_FILE}"):
        try:
            meta = read_meta(meta_file.parent)
        except (OSError, ValueError):
            continue  # unreadable or foreign folder: not a cache hit
        if meta.train_config.get("cache_key") == key and meta.task == task_name:
            hits.append((meta.created_at, meta_file.parent))
    return max(hits)[1] if hits else None


def new_artifact_dir(task_name: str, root: Path | None = None) -> Path:
    """A fresh, sortable artifact folder name: ``<UTC timestamp>-<random>``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return (root or artifacts_root(task_name)) / f"{stamp}-{os.urandom(3).hex()}"


def get_or_train(
    task: TaskConfig,
    *,
    exclude: Sequence[str] = (),
    limit: int | None = None,
    max_length: int | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
    root: Path | None = None,
) -> TrainResult:
    """Reuse the artifact trained with identical task config, data and options, or train one.

    ``limit`` defaults to the task's ``train.limit_per_class``. The key covers the whole task config
    (encoder, labels, LoRA and optimiser settings), the hash of the exact training examples, the
    options below and :data:`RECIPE_VERSION`; ``force`` retrains.
    """
    limit = limit if limit is not None else task.train.limit_per_class
    train, test = training_data(task, exclude=exclude, limit=limit, seed=seed)
    options: dict[str, object] = {
        "exclude_labels": sorted(exclude),
        "limit_per_class": limit,
        "max_length": max_length or task.max_length,
        "epochs": epochs if epochs is not None else task.train.epochs,
        "max_steps": max_steps,
        "batch_size": batch_size or task.train.batch_size,
        "seed": seed,
    }
    key = cache_key(task, train, options)
    if not force:
        hit = find_cached(task.name, key, root)
        if hit is not None:
            return TrainResult(hit, read_meta(hit), reused=True)
    out_dir = new_artifact_dir(task.name, root)
    meta = train_classifier(
        task,
        train,
        test,
        out_dir=out_dir,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        max_length=max_length,
        extra_config={
            "cache_key": key,
            "exclude_labels": options["exclude_labels"],
            "limit_per_class": limit,
        },
    )
    return TrainResult(out_dir, meta, reused=False)
