"""Helpers shared by the model, serving and Triton tests of every tree (not a test module).

A tiny artifact per task is trained once (a few optimiser steps on a handful of examples) and kept
under ``$DRIFTLINE_CACHE/test-artifacts/`` so later runs reuse it; it lives outside
``artifacts/<task>/`` so ``driftline export`` never mistakes it for the task's latest real model.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from driftline.models.artifacts import META_FILE
from driftline.settings import get_settings

RECIPE = "tiny-v1"

#: one headline each of business, sport and tech (what the explainer tests explain)
NEWS_TEXTS = [
    "Stocks rallied as the central bank cut interest rates",
    "The striker scored twice in the cup final",
    "A new smartphone chip doubles battery life",
]


#: texts of a class news_topic was never trained on (a head grown or refitted for "science")
SCIENCE = [
    "Astronomers measured the expansion rate of the universe with a new space telescope.",
    "Physicists observed quantum entanglement between particles separated by kilometres.",
    "Biologists sequenced the genome of a deep sea microbe that survives without oxygen.",
    "Chemists made a catalyst that splits water into hydrogen using sunlight.",
    "A study of fossil teeth shows early mammals ate insects rather than plants.",
    "Researchers mapped the neurons of a fruit fly brain in unprecedented detail.",
]


def count_embeddings(monkeypatch) -> list[str]:
    """Every text a classifier embeds for a head from now on (``Classifier.embed``)."""
    from driftline.models.classifier import Classifier

    embedded: list[str] = []
    real = Classifier.embed

    def counting(model, texts, batch_size=32):
        embedded.extend(texts)
        return real(model, texts, batch_size)

    monkeypatch.setattr(Classifier, "embed", counting)
    return embedded


def tie(engine: str) -> float:
    """How far one model's probabilities for one text may move with the batch it ran in.

    fp32 engines change the last bits with padding; int8 ones quantize activations per batch
    (``quantize_dynamic``), a few thousandths. Two labels closer than this are a tie the batch decides.
    """
    return 0.02 if "int8" in engine else 1e-4


def decided(probabilities: Mapping[str, float], engine: str) -> bool:
    """Whether the top label leads the next by more than ``tie(engine)``: any batch gives the same label."""
    top = sorted(probabilities.values(), reverse=True)
    return len(top) < 2 or top[0] - top[1] > tie(engine)


def small_artifact(task_name: str) -> Path:
    """A few-step LoRA classifier for ``task_name`` (cached; trained on first use, ~10-30 s)."""
    from driftline.models.datasets import limit_per_class, load_dataset
    from driftline.models.tasks import get_task
    from driftline.models.training import train_classifier

    out = get_settings().cache_dir / "test-artifacts" / task_name / RECIPE
    if (out / META_FILE).is_file():
        return out
    task = get_task(task_name)
    train = limit_per_class(load_dataset(task.dataset).split("train"), 6, seed=0)
    staging = out.with_name(f".{out.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    train_classifier(
        task, train, None, out_dir=staging, max_steps=4, batch_size=8, max_length=64, progress=False
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staging, out)
    except OSError:  # a parallel run finished first: use theirs
        shutil.rmtree(staging, ignore_errors=True)
    return out


def unique_model_name(prefix: str) -> str:
    """A model name no other test run uses."""
    return f"test_{prefix}_{uuid.uuid4().hex[:8]}"


def require_triton() -> None:
    """Fail (not skip) a stack test with the fix when Triton is not reachable."""
    triton = get_settings().triton
    with socket.socket() as sock:
        sock.settimeout(2)
        if sock.connect_ex((triton.host, triton.grpc_port)) != 0:
            pytest.fail(f"Triton gRPC {triton.grpc_url} is not reachable; start it with `driftline stack up`")


@contextlib.contextmanager
def exported_model_dir(name: str) -> Iterator[Path]:
    """The model folder ``name`` in the served repository; removed afterwards."""
    model_dir = get_settings().triton.repository / name
    try:
        yield model_dir
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)


@contextlib.contextmanager
def served_export(prefix: str, artifact: Path, **export_options: Any) -> Iterator[tuple[str, str]]:
    """``news_topic``'s ``artifact`` exported under a unique name into the served repository and loaded.

    Yields ``(name, version)``; the model is unloaded and its folder removed afterwards.
    """
    from driftline.clients import triton_client
    from driftline.models.triton.export import export

    require_triton()
    name = unique_model_name(prefix)
    client = triton_client()
    with exported_model_dir(name):
        version = export("news_topic", artifact, name=name, **export_options)
        client.load_model(name)
        try:
            yield name, version
        finally:
            client.unload_model(name)
            client.close()
