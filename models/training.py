"""The training loop: LoRA fine-tuning of a :class:`~driftline.models.classifier.Classifier`, and evaluation.

:func:`train_classifier` (from scratch or continued from a parent artifact) and :func:`evaluate`; tuned
for a few minutes on two CPU cores.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from driftline.models.artifacts import ArtifactMeta, read_meta
from driftline.models.classifier import (
    Classifier,
    build_classifier,
    load_classifier,
    pad_batch,
    save_artifact,
)
from driftline.models.datasets import Example, data_hash, label_counts
from driftline.models.scores import classification_report
from driftline.models.tasks import TaskConfig
from driftline.models.text.noise import augment

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
    otherwise ``epochs`` (default from the task) passes are made. ``task.labels`` may extend the
    parent's labels (appended new classes): the head then grows, each new output imprinted from its
    examples in ``train`` (``models.classifier.grow_head``). Training labels must be a subset of
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
    # labels appended since the parent (accepted new classes): the head grows, imprinted from them
    grown = [label for label in task.labels if parent_meta and label not in parent_meta.labels]
    new_examples = {label: [e.text for e in train if e.label == label] for label in grown}
    model = build_classifier(task, parent=parent, max_length=max_length, new_examples=new_examples or None)
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
                input_ids, mask = pad_batch([encoded.ids[i] for i in batch], pad_id)
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
        "fit": "lora",
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
        "grown_labels": grown,
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
