"""Growing a classifier's head for an accepted new class (models.classifier.grow_head, build_classifier).

From a small news_topic artifact (five labels), a task whose labels append "science": the grown head
keeps the five trained rows exactly, its new row points along the mean embedding of the science
examples (weight imprinting, at the old rows' mean norm) and scores science texts above other news
before any training; incremental training from the parent saves a six-label artifact that loads
back; a parent whose labels are not a prefix of the task's is refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from driftline.models.artifacts import HEAD_FILE
from driftline.models.classifier import build_classifier, load_classifier
from driftline.models.datasets import Example, load_dataset
from driftline.models.tasks import get_task
from driftline.models.training import train_classifier
from tests.support.serving_support import SCIENCE, small_artifact


def _grown_task():
    task = get_task("news_topic")
    return task.model_copy(update={"labels": [*task.labels, "science"]})


def test_grown_head_keeps_old_rows_and_imprints_the_new_class() -> None:
    parent = small_artifact("news_topic")
    old = load_file(parent / HEAD_FILE)
    model = build_classifier(_grown_task(), parent=parent, max_length=64, new_examples={"science": SCIENCE})
    assert model.labels == [*get_task("news_topic").labels, "science"] and model.head.out_features == 6
    weight, bias = model.head.weight.detach(), model.head.bias.detach()
    assert torch.equal(weight[:5], old["weight"].float()) and torch.equal(bias[:5], old["bias"].float())
    mean = model.mean_embedding(SCIENCE)
    assert torch.nn.functional.cosine_similarity(weight[5], mean, dim=0) > 0.999
    assert float(weight[5].norm()) == pytest.approx(float(old["weight"].float().norm(dim=1).mean()), rel=1e-4)
    assert float(bias[5]) == pytest.approx(float(old["bias"].float().mean()), abs=1e-6)

    news = [e.text[:400] for e in load_dataset("bbc_news").split("test")[:12]]
    with torch.no_grad():
        science_scores = model(**model.tokenize(SCIENCE))[:, 5]
        other_scores = model(**model.tokenize(news))[:, 5]
    assert float(science_scores.mean()) > float(other_scores.mean())


def test_incremental_training_saves_a_grown_artifact(tmp_path: Path) -> None:
    parent = small_artifact("news_topic")
    old_news = [Example(id=f"n{i}", text=e.text[:300], label=e.label)
                for i, e in enumerate(load_dataset("bbc_news").split("train")[:10])]  # fmt: skip
    science = [Example(id=f"s{i}", text=t, label="science") for i, t in enumerate(SCIENCE)]
    meta = train_classifier(_grown_task(), old_news + science, None, parent=parent,
                            out_dir=tmp_path / "grown", max_steps=2, batch_size=8, max_length=64,
                            progress=False)  # fmt: skip
    assert meta.labels[-1] == "science" and meta.train_config["grown_labels"] == ["science"]
    loaded = load_classifier(tmp_path / "grown")
    assert loaded.head.out_features == 6 and loaded.predict_proba(SCIENCE[:2]).shape == (2, 6)


def test_labels_may_only_be_appended() -> None:
    parent = small_artifact("news_topic")
    task = get_task("news_topic")
    for labels in ([*reversed(task.labels)], [*task.labels[:-1], "science"]):
        with pytest.raises(ValueError, match="may only be appended"):
            build_classifier(task.model_copy(update={"labels": labels}), parent=parent)
    with pytest.raises(ValueError, match="need example texts"):
        build_classifier(_grown_task(), parent=parent)
