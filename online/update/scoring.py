"""Scoring on held-out texts: the candidate's and the serving version's predictions, metrics, temperature."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

Fit = Literal["lora", "head"]  # what a candidate trains: adapter and head, or the head alone


@dataclass(frozen=True)
class Scored:
    """One model's probabilities for a list of texts; columns in ``labels`` order."""

    labels: list[str]
    probabilities: np.ndarray

    @property
    def predicted(self) -> list[str]:
        """The most probable label of each text."""
        return [self.labels[i] for i in self.probabilities.argmax(axis=1)]


def predictions(
    fit: Fit, candidate: Path, serving: Path, texts: Sequence[str], cache: Any | None = None
) -> dict[str, Scored]:
    """Each model's probabilities for every text: ``{"candidate": ..., "serving": ...}``.

    A head refit shares the serving version's encoder and adapter, so the texts are embedded once
    (or taken from ``cache``, a ``models.head_refit.FeatureCache``) and both heads read the same
    features; otherwise each model classifies them in full.
    """
    from driftline.models.artifacts import read_meta
    from driftline.models.classifier import load_classifier

    if not texts:
        empty = {}
        for name, path in (("candidate", candidate), ("serving", serving)):
            labels = list(read_meta(path).labels)
            empty[name] = Scored(labels, np.zeros((0, len(labels))))
        return empty
    if fit == "head":
        import torch
        from safetensors.torch import load_file

        from driftline.models.artifacts import HEAD_FILE
        from driftline.models.head_refit import FeatureCache, encoder_key

        model = load_classifier(candidate)
        cache = cache if cache is not None else FeatureCache()
        features = cache.features(model, encoder_key(candidate), list(texts))
        serving_labels = read_meta(serving).labels
        serving_head = torch.nn.Linear(features.shape[1], len(serving_labels))
        serving_head.load_state_dict(load_file(serving / HEAD_FILE))
        heads = {"candidate": (model.head, model.labels), "serving": (serving_head, serving_labels)}
        with torch.inference_mode():
            return {
                name: Scored(list(labels), torch.softmax(head(features), dim=1).numpy())
                for name, (head, labels) in heads.items()
            }
    scored = {}
    for name, path in (("candidate", candidate), ("serving", serving)):
        model = load_classifier(path)
        scored[name] = Scored(list(model.labels), model.predict_proba(list(texts)))
    return scored


def serving_scores(fit: Fit, serving: Path, texts: Sequence[str], cache: Any | None = None) -> Scored:
    """The serving version's probabilities for ``texts`` alone (features from ``cache`` for a head fit)."""
    from driftline.models.classifier import load_classifier

    model = load_classifier(serving)
    if fit != "head" or not texts:
        return Scored(list(model.labels), model.predict_proba(list(texts)))
    import torch

    from driftline.models.head_refit import FeatureCache, encoder_key

    cache = cache if cache is not None else FeatureCache()
    features = cache.features(model, encoder_key(serving), list(texts))
    with torch.inference_mode():
        return Scored(list(model.labels), torch.softmax(model.head(features), dim=1).numpy())


def holdout_temperature(scored: Scored, truth: Sequence[str]) -> float | None:
    """The temperature that calibrates ``scored`` on its labelled texts (``online.estimate``); None
    when no true label is one the model has."""
    from driftline.online.gates.estimate import fit_temperature

    column = {label: i for i, label in enumerate(scored.labels)}
    rows = [i for i, label in enumerate(truth) if label in column]
    if not rows:
        return None
    return fit_temperature(scored.probabilities[rows], [column[truth[i]] for i in rows])


def round_metric(value: float | None, digits: int = 4) -> float | None:
    """``value`` rounded for a metrics row; None stays None."""
    return None if value is None else round(value, digits)


def engine_parent(fit: str | None, parent: Path) -> Path | None:
    """A head refit runs its parent's encoder and adapter: its export inherits the parent's engine.

    Engine speed is the encoder's and the quantized encoder is identical, so measuring every engine
    again would only repeat the parent's ranking (and take most of the update's time on two
    cores). None (measure as for any export) for a LoRA update, or a parent never measured.
    """
    from driftline.models.artifacts import read_meta

    return parent if fit == "head" and read_meta(parent).engines else None


def score(metric: str, truth: Sequence[str], predicted: Sequence[str]) -> float:
    """``metric`` of predictions; a label the model cannot predict simply counts as wrong."""
    from driftline.models.scores import classification_report

    if not truth:
        return 0.0
    labels = sorted(set(truth) | set(predicted))
    return float(classification_report(list(truth), list(predicted), labels)[metric])
