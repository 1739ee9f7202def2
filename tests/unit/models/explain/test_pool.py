"""``ExplainerPool``'s rows (errors included), its bookkeeping checked with a stand-in explainer.

One row per request in order, grouped by version; error rows for a missing or unloadable version and
for one failing text; the LRU bound. One test explains with a real exported version folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from driftline.models.artifacts import read_meta
from driftline.models.explain.pool import ExplainerPool, ExplainRequest
from tests.support.serving_support import NEWS_TEXTS, small_artifact


class FakeExplainer:
    method = "fake"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.adapter_hash = f"hash-{folder.name}"
        self.calls: list[int] = []

    def explain(
        self, texts: Sequence[str], labels: Sequence[str] | None = None
    ) -> list[list[tuple[str, float]]]:
        self.calls.append(len(texts))
        if any("boom" in t for t in texts):
            raise RuntimeError("text failed")
        return [[(t.split()[0], 1.0)] for t in texts]


def _request(i: int, text: str, label: str, model: str, version: str) -> ExplainRequest:
    return ExplainRequest(
        task="news_topic", event_id=f"e{i}", text=text, label=label, confidence=0.5, model_name=model,
        model_version=version, event_ts_ms=1_700_000_000_000 + i, reason="uncertain",
    )  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for model, version in [("m", "1"), ("m", "2"), ("n", "1")]:
        (tmp_path / model / version).mkdir(parents=True)
    return tmp_path


def test_pool_explains_an_exported_version_folder(tmp_path: Path) -> None:
    artifact = small_artifact("news_topic")
    shutil.copytree(artifact, tmp_path / "m" / "3")
    pool = ExplainerPool(tmp_path, capacity=1, num_threads=1)
    rows = pool.explain(
        [_request(i, NEWS_TEXTS[i], "sport", "m", "3") for i in range(2)]
        + [_request(9, "x", "sport", "m", "4")]
    )
    assert [r.event_id for r in rows] == ["e0", "e1", "e9"]
    assert all(r.explanation and not r.error for r in rows[:2])
    assert {r.adapter_hash for r in rows[:2]} == {read_meta(artifact).adapter_hash}
    assert rows[2].error.endswith("does not exist") and not rows[2].explanation


def test_one_row_per_request_in_order_grouped_by_version(repo: Path) -> None:
    loaded: list[Path] = []

    def loader(folder: Path) -> FakeExplainer:
        loaded.append(folder)
        return FakeExplainer(folder)

    pool = ExplainerPool(repo, loader=loader)
    requests = [_request(0, "alpha a", "x", "m", "1"), _request(1, "beta b", "x", "m", "2"),
                _request(2, "gamma c", "x", "m", "1"), _request(3, "delta d", "x", "gone", "1")]  # fmt: skip
    rows = pool.explain(requests)
    assert [r.event_id for r in rows] == ["e0", "e1", "e2", "e3"]
    assert [r.explanation for r in rows[:3]] == [[("alpha", 1.0)], [("beta", 1.0)], [("gamma", 1.0)]]
    assert [r.adapter_hash for r in rows[:3]] == ["hash-1", "hash-2", "hash-1"]
    assert rows[3].error == f"model version folder {repo / 'gone' / '1'} does not exist"
    assert rows[3].explanation == [] and rows[3].reason == "uncertain" and rows[3].label == "x"
    assert sorted(loaded) == [repo / "m" / "1", repo / "m" / "2"]  # each version loaded once
    pool.explain(requests[:1])
    assert len(loaded) == 2  # cached


def test_a_failing_text_gets_an_error_row_and_its_neighbours_their_explanations(repo: Path) -> None:
    fakes: list[FakeExplainer] = []
    pool = ExplainerPool(repo, loader=lambda folder: fakes.append(FakeExplainer(folder)) or fakes[-1])
    rows = pool.explain(
        [_request(i, text, "x", "m", "1") for i, text in enumerate(["ok one", "boom", "ok two"])]
    )
    assert [r.error for r in rows] == ["", "RuntimeError: text failed", ""]
    assert [r.explanation for r in rows] == [[("ok", 1.0)], [], [("ok", 1.0)]]
    assert fakes[0].calls == [3, 1, 1, 1]  # the batch, then each text alone


def test_unloadable_and_invalid_versions_give_error_rows(repo: Path) -> None:
    def loader(folder: Path) -> FakeExplainer:
        raise OSError(f"corrupt weights in {folder}")

    pool = ExplainerPool(repo, loader=loader)
    rows = pool.explain([_request(0, "a", "x", "m", "1"), _request(1, "a", "x", "../m", "1"),
                         _request(2, "a", "x", "m", "1/../../n")])  # fmt: skip
    assert rows[0].error.startswith("cannot load the version: OSError: corrupt weights")
    assert all(r.error.startswith("not a model name and version number") for r in rows[1:])
    assert pool.loaded == []  # a failed load is not cached: the next batch tries again


def test_capacity_keeps_the_most_recently_used_versions(repo: Path) -> None:
    pool = ExplainerPool(repo, capacity=2, loader=FakeExplainer)
    for model, version in [("m", "1"), ("m", "2"), ("m", "1"), ("n", "1")]:
        pool.get(model, version)
    assert pool.loaded == [("m", "1"), ("n", "1")]
