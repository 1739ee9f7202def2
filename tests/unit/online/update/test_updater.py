"""``Updater.warm``: the serving encoder's replay and test texts are embedded ahead of a head refit,
in steps, and a refit afterwards embeds only its new feedback texts.

No Triton: a folder shaped like a model repository (one version: a small news_topic artifact) and a
stand-in swapper that reports it as serving; the updater reads the serving version from there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from driftline.models.datasets import load_dataset
from driftline.online.config import UpdaterConfig
from driftline.online.update.sources import ListSource
from driftline.online.update.updater import Updater
from tests.support.serving_support import count_embeddings, small_artifact


class _Serving:
    """What the updater asks a swapper for: the repository and the serving versions."""

    def __init__(self, repository: Path) -> None:
        self.repository = repository

    def serving_versions(self, model: str) -> list[int]:
        return [1]


def test_warm_up_in_steps_then_a_refit_embeds_only_new_texts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(small_artifact("news_topic"), tmp_path / "repo" / "news_topic" / "1")
    config = UpdaterConfig(replay_size=40, drift_fit="head")
    updater = Updater(
        "news_topic", source=ListSource(), swapper=_Serving(tmp_path / "repo"), config=config,
        artifacts_dir=tmp_path / "artifacts", progress=False, original_eval_size=30,
    )  # fmt: skip
    embedded = count_embeddings(monkeypatch)
    left = [updater.warm(25)]
    while left[-1]:
        left.append(updater.warm(25))
    assert left[0] == 70 - 25 and left == sorted(left, reverse=True) and len(left) == 3
    assert len(embedded) == len(set(embedded)) == 70  # 40 replay + 30 test, each once
    assert updater.warm(25) == 0 and len(embedded) == 70  # warm: nothing more to do

    parent = tmp_path / "repo" / "news_topic" / "1"
    feedback = load_dataset("bbc_news").split("validation")[:12]
    embedded.clear()
    candidate = updater.build_candidate(parent, feedback, feedback, fit="head")
    assert candidate.decision.metrics["fit"] == "head"
    assert set(embedded) <= {e.text for e in feedback}  # replay and test came from the cache
    # both heads calibrated on the same held-out texts, for the watch's label-free estimate
    temperatures = [candidate.decision.metrics[k] for k in ("temperature", "baseline_temperature")]
    assert all(0.05 < t < 20 and t != 1.0 for t in temperatures), temperatures


def test_lora_updaters_do_not_warm(tmp_path: Path) -> None:
    updater = Updater(
        "news_topic", source=ListSource(), swapper=_Serving(tmp_path), config=UpdaterConfig(drift_fit="lora")
    )
    assert updater.warm() == 0 and len(updater.features) == 0


def test_a_drift_of_a_replaced_version_does_not_start_an_update() -> None:
    """Raised on version 3 before a promotion, delivered after it: version 4 serves, nothing to answer."""
    from driftline.online.update.sources import ListSource
    from driftline.online.update.updater import Updater

    class Repository:  # what TritonSwapper reads from config.pbtxt
        def __init__(self) -> None:
            self.versions: list[int] | None = [4]

        def serving_versions(self, model: str) -> list[int]:
            if self.versions is None:
                raise OSError("config.pbtxt unreadable")
            return self.versions

    repo = Repository()
    updater = Updater("news_topic", source=ListSource(), swapper=repo)
    assert not updater.about_serving("3") and updater.about_serving("4")
    assert updater.about_serving("")  # a version nobody named: kept
    repo.versions = None
    assert updater.about_serving("3")  # bookkeeping that fails never drops a real drift
    assert Updater("news_topic", source=ListSource()).about_serving("3")  # library use: no swapper
