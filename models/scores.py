"""Classification metrics over label names: accuracy, macro-F1, per-class scores, confusion matrix.

Plain numpy (no scikit-learn in the environment). The report is a JSON-ready dict because it is
stored verbatim in ``meta.json`` and compared by the online-learning updater before a hot-swap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def classification_report(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]
) -> dict[str, object]:
    """Scores of ``y_pred`` against ``y_true``; ``labels`` fixes the confusion-matrix order.

    ``macro_f1`` averages F1 over the labels that occur in ``y_true`` or ``y_pred``: a label absent
    from both (e.g. an evaluation slice without that class) says nothing about the model and must not
    drag the average to zero, while a label that is predicted but never true still counts (as 0).
    Rows of ``confusion`` are true labels, columns predictions.
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    labels = list(labels)
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({y for y in (*y_true, *y_pred) if y not in index})
    if unknown:
        raise ValueError(f"labels {unknown} are not in the label list {labels}")
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        confusion[index[t], index[p]] += 1
    tp = np.diag(confusion).astype(float)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = (support + predicted) > 0
    total = int(confusion.sum())
    return {
        "n": total,
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            label: {
                "precision": round(float(precision[i]), 4),
                "recall": round(float(recall[i]), 4),
                "f1": round(float(f1[i]), 4),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "labels": labels,
        "confusion": confusion.tolist(),
    }
