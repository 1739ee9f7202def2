"""``serve_version`` over a real export: serving options survive a promotion (trains, exports)."""

from __future__ import annotations

from pathlib import Path

from driftline.online.serving.swap import SwapReport
from tests.unit.online.serving.test_serve import FakeSwapper


class _FileSwapper(FakeSwapper):
    """Swaps by rewriting the repository's version lists, as ``TritonSwapper`` does before loading."""

    def serving_versions(self, model: str) -> list[int]:
        from driftline.models.triton.export import serving_versions

        return serving_versions(model, self.repository)

    def swap(self, model: str, version: int) -> SwapReport:
        from driftline.models.triton.export import set_serving_versions

        report = SwapReport(model, self.serving_versions(model), version)
        set_serving_versions(model, [version], self.repository)
        return report


def test_gpu_serving_options_survive_an_updater_promotion(tmp_path: Path) -> None:
    """Kind, instances, threads and batching belong to the served model: the
    updater's export of a promoted candidate inherits them from the serving version."""
    from driftline.models.artifacts import read_meta
    from driftline.models.datasets import load_dataset
    from driftline.models.triton.export import CONFIG_FILE, ServingOptions, export, read_config
    from driftline.online.gates.promotion import Decision, Verdict
    from driftline.online.update.sources import ListSource
    from driftline.online.update.updater import Candidate, Updater
    from tests.support.serving_support import small_artifact

    artifact = small_artifact("news_topic")
    gpu = ServingOptions(
        max_queue_delay_us=2500, preferred_batch_sizes=(8, 32), instances=2, num_threads=3,
        kind="gpu",
    )  # fmt: skip
    assert export("news_topic", artifact, name="gpu_m", repository=tmp_path, options=gpu) == 1

    class PromotingUpdater(Updater):
        def build_candidate(
            self, parent: Path, recent: list, fresh: list | None = None, fit: str = "lora"
        ) -> Candidate:
            return Candidate(
                artifact, read_meta(artifact), Decision(Verdict.PROMOTE, "better"), len(recent), 0, 0.0, 0.0
            )

    recent = load_dataset("bbc_news").split("test")[:80]
    updater = PromotingUpdater(
        "news_topic", source=ListSource(recent), swapper=_FileSwapper(tmp_path), model_name="gpu_m",
        progress=False, log=lambda message: None,
    )  # fmt: skip
    outcome = updater.run_update("drift")
    assert outcome.promoted and outcome.version == 2, outcome.reason
    config = read_config(tmp_path / "gpu_m" / CONFIG_FILE)
    assert list(config.version_policy.specific.versions) == [2]
    assert ServingOptions.from_config(config) == gpu
    # told otherwise, an export changes them (and the next one inherits the change)
    export("news_topic", artifact, name="gpu_m", repository=tmp_path, kind="cpu")
    assert ServingOptions.from_config(read_config(tmp_path / "gpu_m" / CONFIG_FILE)).kind == "cpu"
