"""``Explainer`` on a small trained artifact: what makes its words trustworthy.

They are words of the text the model saw (normalized as the artifact says), best first; the label
explained matters; a batch gives each text the same explanation as explaining it alone (padding and
neighbours do not leak); and it explains the label these weights predict unless told which one.
"""

from __future__ import annotations

import pytest

from driftline.models.explain.gradients import TOP_K
from driftline.models.text.codec import normalize
from tests.support.serving_support import NEWS_TEXTS, small_artifact


@pytest.fixture(scope="module")
def explainer():
    from driftline.models.explain.explainer import Explainer

    return Explainer(small_artifact("news_topic"), num_threads=1, batch_size=2)


def test_words_come_from_the_text_best_first(explainer) -> None:
    for text, words in zip(NEWS_TEXTS, explainer.explain(NEWS_TEXTS), strict=True):
        assert 0 < len(words) <= TOP_K
        assert all(word in text for word, _ in words)
        scores = [score for _, score in words]
        assert scores == sorted(scores, reverse=True)
        assert sum(abs(s) for s in scores) <= 1.0 + 1e-6  # rows are scaled to sum(|score|) = 1


def test_batching_does_not_change_an_explanation(explainer) -> None:
    together = explainer.explain(NEWS_TEXTS)  # batch_size=2: a padded pair, then a single
    alone = [explainer.explain([text])[0] for text in NEWS_TEXTS]
    for a, b in zip(together, alone, strict=True):
        assert [w for w, _ in a] == [w for w, _ in b]
        assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=2e-3)


def test_the_label_explained_matters_and_defaults_to_the_prediction(explainer) -> None:
    default = explainer.explain(NEWS_TEXTS)
    per_label = {
        label: explainer.explain(NEWS_TEXTS, [label] * len(NEWS_TEXTS)) for label in explainer.labels
    }
    for i in range(len(NEWS_TEXTS)):
        matching = [label for label, out in per_label.items() if out[i] == default[i]]
        assert len(matching) == 1, "the default explains exactly one label: the predicted one"
        assert len({tuple(out[i]) for out in per_label.values()}) > 1
    with pytest.raises(ValueError, match="not one of"):
        explainer.explain(NEWS_TEXTS[:1], ["no_such_label"])
    with pytest.raises(TypeError):
        explainer.explain(NEWS_TEXTS[0])


def test_text_is_normalized_as_the_artifact_says(explainer) -> None:
    assert explainer.model.normalize_input
    disguised = "Ｓｔｏｃｋｓ ral\u200blied as the central bank cut interest rates"
    (words,) = explainer.explain([disguised])
    clean = normalize(disguised)
    assert all(word in clean for word, _ in words)
    assert explainer.explain([""]) == [[]]
