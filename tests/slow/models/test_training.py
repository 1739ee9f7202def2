"""LoRA training: a short run learns, artifacts are complete, parents and exclusions are recorded.

Runs on news_topic (MiniLM, the smaller encoder) with a few dozen short examples so the whole file
stays around a minute of CPU on two cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from driftline.models.artifacts import ADAPTER_DIR, HEAD_FILE, META_FILE, content_hash, read_meta
from driftline.models.cache import find_cached, get_or_train
from driftline.models.classifier import build_classifier, load_classifier
from driftline.models.datasets import limit_per_class, load_dataset
from driftline.models.tasks import get_task
from driftline.models.training import evaluate, train_classifier

pytestmark = pytest.mark.slow

MAX_LENGTH = 64


@pytest.fixture(scope="module")
def task():
    return get_task("news_topic")


@pytest.fixture(scope="module")
def slices(task):
    dataset = load_dataset(task.dataset)
    train = limit_per_class(dataset.split("train"), 12, seed=0)
    test = limit_per_class(dataset.split("test"), 8, seed=0)
    return train, test


@pytest.fixture(scope="module")
def trained(task, slices, tmp_path_factory) -> Path:
    train, test = slices
    out = tmp_path_factory.mktemp("artifacts") / "base"
    train_classifier(
        task,
        train,
        test,
        out_dir=out,
        epochs=3,
        batch_size=8,
        max_length=MAX_LENGTH,
        progress=False,
        lr=1e-3,
        head_lr=2e-2,
    )
    return out


def test_short_training_beats_the_untrained_head(task, slices, trained: Path) -> None:
    _, test = slices
    untrained = build_classifier(task, max_length=MAX_LENGTH).eval()
    before = evaluate(untrained, test)
    after = read_meta(trained).metrics
    assert after["n"] == len(test) == before["n"]
    # 5 balanced classes: an untrained head is near chance (0.2); a trained one is far above it.
    assert after["accuracy"] >= before["accuracy"] + 0.25, (before["accuracy"], after["accuracy"])
    assert after["accuracy"] >= 0.6
    assert evaluate(trained, test)["accuracy"] == pytest.approx(after["accuracy"], abs=0.05)


def test_artifact_files_and_meta(task, slices, trained: Path) -> None:
    train, _ = slices
    assert (trained / ADAPTER_DIR / "adapter_config.json").is_file()
    assert (trained / ADAPTER_DIR / "adapter_model.safetensors").is_file()
    head = load_file(trained / HEAD_FILE)
    assert tuple(head["weight"].shape) == (len(task.labels), 384) and tuple(head["bias"].shape) == (5,)
    meta = read_meta(trained)
    assert meta.task == "news_topic" and meta.encoder == "minilm" and meta.labels == task.labels
    assert meta.max_length == MAX_LENGTH and meta.parent is None
    assert meta.normalize_input is task.normalize_input is True  # serving must normalize like training
    assert meta.adapter_hash == content_hash(trained)
    assert len(meta.data_hash) == 16 and meta.created_at
    assert meta.train_config["n_train"] == len(train) and meta.train_config["steps"] == 3 * 8
    assert set(meta.metrics) >= {"accuracy", "macro_f1", "per_class", "confusion", "labels"}
    adapter_config = json.loads((trained / ADAPTER_DIR / "adapter_config.json").read_text())
    assert adapter_config["r"] == task.lora.r and set(adapter_config["target_modules"]) == {"query", "value"}
    assert not list(trained.parent.glob(".*tmp*")), "temporary folder left behind"


def test_loaded_classifier_predicts_probabilities_in_input_order(task, slices, trained: Path) -> None:
    _, test = slices
    merged = load_classifier(trained)
    unmerged = load_classifier(trained, merge=False)
    texts = [test[0].text, "short", test[1].text]
    probs = merged.predict_proba(texts, max_length=MAX_LENGTH)
    assert probs.shape == (3, 5) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # merging LoRA into the weights must not change predictions
    assert np.allclose(probs, unmerged.predict_proba(texts, max_length=MAX_LENGTH), atol=1e-4)
    # batching/sorting must not change per-text results
    single = merged.predict_proba([texts[2]], max_length=MAX_LENGTH)
    assert np.allclose(single[0], probs[2], atol=1e-5)
    assert merged.labels == task.labels
    with pytest.raises(TypeError):
        merged.predict_proba("not a list")


def test_incremental_training_records_parent_and_changes_weights(
    task, slices, trained: Path, tmp_path
) -> None:
    train, _ = slices
    child_dir = tmp_path / "child"
    child = train_classifier(
        task,
        train[:16],
        None,
        parent=trained,
        out_dir=child_dir,
        max_steps=2,
        batch_size=8,
        max_length=MAX_LENGTH,
        progress=False,
    )
    parent_meta = read_meta(trained)
    assert child.parent == parent_meta.adapter_hash
    assert child.adapter_hash != parent_meta.adapter_hash
    assert read_meta(child_dir).parent == parent_meta.adapter_hash
    with pytest.raises(FileExistsError):
        train_classifier(task, train[:4], None, out_dir=child_dir, max_steps=1, progress=False)


def test_excluded_labels_are_absent_and_cache_is_reused(task, tmp_path) -> None:
    options = dict(
        exclude=["entertainment"], limit=3, max_length=32, max_steps=2, batch_size=8, root=tmp_path
    )
    first = get_or_train(task, progress=False, **options)
    assert not first.reused
    counts = first.meta.train_config["train_label_counts"]
    assert "entertainment" not in counts and set(counts) == {"business", "politics", "sport", "tech"}
    assert first.meta.train_config["exclude_labels"] == ["entertainment"]
    assert first.meta.labels == task.labels  # head keeps all 5 outputs
    assert load_file(first.artifact_dir / HEAD_FILE)["weight"].shape[0] == 5
    # evaluated on the full held-out test split, entertainment included
    assert first.meta.metrics["n"] == len(load_dataset(task.dataset).split("test"))

    again = get_or_train(task, progress=False, **options)
    assert again.reused and again.artifact_dir == first.artifact_dir
    assert find_cached(task.name, first.meta.train_config["cache_key"], tmp_path) == first.artifact_dir
    with pytest.raises(ValueError, match="unknown labels"):
        get_or_train(task, exclude=["weather"], root=tmp_path, progress=False)
    assert (first.artifact_dir / META_FILE).is_file()
