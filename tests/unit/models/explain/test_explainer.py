"""``Explainer`` on a small trained artifact, and ``ExplainerPool``'s rows (errors included).

The explainer is checked for what makes its words trustworthy: they are words of the text the model
saw (normalized as the artifact says), the label explained matters, a batch gives each text the
same explanation as explaining it alone (padding and neighbours do not leak), and it explains the
label these weights predict unless told which one. The pool is checked with a stand-in explainer
for its bookkeeping: one row per request in order, grouping by version, error rows for a missing
or unloadable version and for one failing text, and the LRU bound.
"""

from __future__ import annotations

import pytest

from driftline.models.explain.gradients import TOP_K
from driftline.models.text.codec import normalize
from tests.support.serving_support import small_artifact

TEXTS = [
    "Stocks rallied as the central bank cut interest rates",
    "The striker scored twice in the cup final",
    "A new smartphone chip doubles battery life",
]


@pytest.fixture(scope="module")
def explainer():
    from driftline.models.explain.explainer import Explainer

    return Explainer(small_artifact("news_topic"), num_threads=1, batch_size=2)


def test_words_come_from_the_text_best_first(explainer) -> None:
    for text, words in zip(TEXTS, explainer.explain(TEXTS), strict=True):
        assert 0 < len(words) <= TOP_K
        assert all(word in text for word, _ in words)
        scores = [score for _, score in words]
        assert scores == sorted(scores, reverse=True)
        assert sum(abs(s) for s in scores) <= 1.0 + 1e-6  # rows are scaled to sum(|score|) = 1


def test_batching_does_not_change_an_explanation(explainer) -> None:
    together = explainer.explain(TEXTS)  # batch_size=2: a padded pair, then a single
    alone = [explainer.explain([text])[0] for text in TEXTS]
    for a, b in zip(together, alone, strict=True):
        assert [w for w, _ in a] == [w for w, _ in b]
        assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=2e-3)


def test_the_label_explained_matters_and_defaults_to_the_prediction(explainer) -> None:
    default = explainer.explain(TEXTS)
    per_label = {label: explainer.explain(TEXTS, [label] * len(TEXTS)) for label in explainer.labels}
    for i in range(len(TEXTS)):
        matching = [label for label, out in per_label.items() if out[i] == default[i]]
        assert len(matching) == 1, "the default explains exactly one label: the predicted one"
        assert len({tuple(out[i]) for out in per_label.values()}) > 1
    with pytest.raises(ValueError, match="not one of"):
        explainer.explain(TEXTS[:1], ["no_such_label"])
    with pytest.raises(TypeError):
        explainer.explain(TEXTS[0])


def test_text_is_normalized_as_the_artifact_says(explainer) -> None:
    assert explainer.model.normalize_input
    disguised = "Ｓｔｏｃｋｓ ral\u200blied as the central bank cut interest rates"
    (words,) = explainer.explain([disguised])
    clean = normalize(disguised)
    assert all(word in clean for word, _ in words)
    assert explainer.explain([""]) == [[]]
