"""Head refit (models.head_refit): a new version that changes only the head, in seconds.

From a barely trained news_topic artifact, a refit on a few labelled texts per class (plus an
appended class, "science"):
- keeps the adapter's weights byte for byte (same encoder key) and records fit "head" and its parent;
- classifies held-out news far better than its parent, and names unseen science texts "science";
- the feature cache embeds a text once per encoder: a second refit on the same replay texts plus a
  few new ones embeds only the new ones;
- the updater's shared-feature scoring of a head refit (both heads on one embedding) gives exactly
  the predictions of classifying with each model in full.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from driftline.models.artifacts import ADAPTER_DIR, read_meta
from driftline.models.classifier import load_classifier
from driftline.models.datasets import Example, limit_per_class, load_dataset
from driftline.models.head_refit import FeatureCache, encoder_key, refit_head
from driftline.models.tasks import get_task
from tests.support.serving_support import SCIENCE, count_embeddings, small_artifact

UNSEEN_SCIENCE = [
    "Geologists dated volcanic rock layers to show when the continents drifted apart.",
    "A new telescope photographed the atmosphere of a planet orbiting a distant star.",
]


def _task(grown: bool):
    task = get_task("news_topic")
    return task.model_copy(update={"labels": [*task.labels, "science"]}) if grown else task


def _news(split: str, per_class: int) -> list[Example]:
    return limit_per_class(load_dataset("bbc_news").split(split), per_class, seed=1)


def _accuracy(artifact: Path, examples: list[Example]) -> float:
    predicted = load_classifier(artifact).predict([e.text for e in examples])
    return sum(p == e.label for p, e in zip(predicted, examples, strict=True)) / len(examples)


def test_refit_changes_only_the_head_and_learns(tmp_path: Path) -> None:
    parent = small_artifact("news_topic")
    science = [Example(id=f"s{i}", text=t, label="science") for i, t in enumerate(SCIENCE)]
    train = _news("train", 10) + science
    meta = refit_head(_task(grown=True), train, parent=parent, out_dir=tmp_path / "refit")

    refit = tmp_path / "refit"
    assert meta.train_config["fit"] == "head" and meta.parent == read_meta(parent).adapter_hash
    assert meta.labels == [*get_task("news_topic").labels, "science"]
    assert meta.train_config["grown_labels"] == ["science"]
    assert encoder_key(refit) == encoder_key(parent)
    weights = sorted((parent / ADAPTER_DIR).rglob("*.safetensors"))
    assert weights and all((refit / p.relative_to(parent)).read_bytes() == p.read_bytes() for p in weights)

    held_out = _news("validation", 8)
    before, after = _accuracy(parent, held_out), _accuracy(refit, held_out)
    assert after >= before + 0.2, (before, after)
    assert load_classifier(refit).predict(UNSEEN_SCIENCE) == ["science", "science"]


def test_cache_embeds_each_text_once_per_encoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parent = small_artifact("news_topic")
    embedded = count_embeddings(monkeypatch)
    cache = FeatureCache()
    replay = _news("train", 6)
    refit_head(_task(grown=False), replay, parent=parent, out_dir=tmp_path / "a", cache=cache)
    assert len(embedded) == len({e.text for e in replay})
    embedded.clear()
    new = _news("validation", 1)
    refit_head(_task(grown=False), replay + new, parent=parent, out_dir=tmp_path / "b", cache=cache)
    assert sorted(embedded) == sorted({e.text for e in new})


def test_shared_feature_scoring_equals_full_classification(tmp_path: Path) -> None:
    from driftline.online.update.scoring import predictions as _predictions

    parent = small_artifact("news_topic")
    refit_head(_task(grown=False), _news("train", 8), parent=parent, out_dir=tmp_path / "refit")
    texts = [e.text for e in _news("test", 6)]
    shared = _predictions("head", tmp_path / "refit", parent, texts)
    full = _predictions("lora", tmp_path / "refit", parent, texts)
    for name in ("candidate", "serving"):
        assert shared[name].labels == full[name].labels
        assert shared[name].predicted == full[name].predicted
        np.testing.assert_allclose(shared[name].probabilities, full[name].probabilities, atol=1e-4)
    assert shared["candidate"].predicted != shared["serving"].predicted  # the refit changed the answers


def test_a_saved_cache_starts_the_next_process_warm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``FeatureCache(directory=)``: what one updater embedded, the next one reads back (no pickle)."""
    parent = small_artifact("news_topic")
    model, key = load_classifier(parent), encoder_key(parent)
    texts = [e.text for e in _news("train", 4)]
    first = FeatureCache(directory=tmp_path / "features")
    vectors = first.features(model, key, texts)
    path = first.save(key)
    assert path is not None and path.name == f"{key}.npz"

    embedded = count_embeddings(monkeypatch)
    second = FeatureCache(directory=tmp_path / "features")
    assert second.missing(key, texts) == [] and second.missing("another-encoder", texts) == texts
    assert torch.equal(second.features(model, key, texts), vectors) and embedded == []

    path.write_bytes(b"not an npz")  # a damaged file is ignored: the texts are embedded again
    third = FeatureCache(directory=tmp_path / "features")
    assert third.missing(key, texts) == texts
