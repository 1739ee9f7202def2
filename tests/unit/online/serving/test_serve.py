"""``serve_version``, the one "make version N serve" operation, on a fake swapper and registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from driftline.online.serving.registry import RegistryError
from driftline.online.serving.serve import ServedButNotRecorded, rollback, serve_version
from driftline.online.serving.swap import SwapError, SwapReport
from driftline.schema.records import ModelRecord, ModelStatus


@dataclass
class FakeSwapper:
    repository: Path
    serving: dict[str, list[int]] = field(default_factory=dict)
    fail: bool = False
    calls: list[tuple[str, int]] = field(default_factory=list)

    def serving_versions(self, model: str) -> list[int]:
        return list(self.serving.get(model, []))

    def swap(self, model: str, version: int) -> SwapReport:
        self.calls.append((model, version))
        if self.fail:
            raise SwapError(f"{model}: could not load version {version}")
        report = SwapReport(model, self.serving_versions(model), version, load_s=1.234, drain_s=0.5)
        self.serving[model] = [version]
        return report


@dataclass
class FakeRegistry:
    rows: dict[tuple[str, int], ModelRecord] = field(default_factory=dict)
    broken: bool = False

    def _record(self, task: str, version: int, status: ModelStatus, reason: str) -> ModelRecord:
        return ModelRecord(
            task=task, version=version, adapter_hash=f"h{version}", status=status, reason=reason
        )

    def ensure(
        self, task: str, version: int, artifact_dir: object, status: ModelStatus, reason: str
    ) -> ModelRecord:
        if self.broken:
            raise OSError("registry down")
        return self.rows.setdefault((task, version), self._record(task, version, status, reason))

    def save(self, record: ModelRecord) -> ModelRecord:
        if self.broken:
            raise OSError("registry down")
        self.rows[(record.task, record.version)] = record
        return record

    def set_status(self, record: ModelRecord, status: ModelStatus, reason: str | None = None) -> ModelRecord:
        return self.save(record.model_copy(update={"status": status, "reason": reason or record.reason}))

    def get(self, task: str, version: int) -> ModelRecord:
        return self.rows[(task, version)]

    def rollback_target(self, task: str) -> ModelRecord:
        retired = [r for (t, _), r in self.rows.items() if t == task and r.status == ModelStatus.RETIRED]
        return max(retired, key=lambda r: r.version)


def _repo(tmp_path: Path, model: str, *versions: int) -> Path:
    for v in versions:
        (tmp_path / model / str(v)).mkdir(parents=True)
    return tmp_path


def test_serve_swaps_then_records_and_retires_what_served(tmp_path: Path) -> None:
    swapper = FakeSwapper(_repo(tmp_path, "m", 1, 2), {"m": [1]})
    registry, alerts = FakeRegistry(), []
    record, report = serve_version("m", 2, swapper, registry, reason="better", publish=alerts.append)
    assert swapper.calls == [("m", 2)] and report.old_versions == [1]
    assert record is not None and record.status == ModelStatus.SERVING and record.version == 2
    assert registry.get("m", 1).status == ModelStatus.RETIRED  # hand-exported v1 was registered first
    assert "replaced by version 2" in (registry.get("m", 1).reason or "")
    assert [a["severity"] for a in alerts] == ["info"]


def test_caller_record_gets_the_swap_timings(tmp_path: Path) -> None:
    swapper = FakeSwapper(_repo(tmp_path, "m", 1, 2), {"m": [1]})
    candidate = ModelRecord(
        task="m", version=2, adapter_hash="c", status=ModelStatus.CANDIDATE, metrics={"a": 1}
    )
    record, _ = serve_version("m", 2, swapper, FakeRegistry(), reason="x", record=candidate)
    assert record is not None and record.metrics == {"a": 1, "swap_load_s": 1.23, "swap_drain_s": 0.5}


def test_missing_version_or_failed_swap_changes_nothing(tmp_path: Path) -> None:
    swapper = FakeSwapper(_repo(tmp_path, "m", 1), {"m": [1]})
    registry = FakeRegistry()
    with pytest.raises(RegistryError):
        serve_version("m", 7, swapper, registry, reason="x")
    assert swapper.calls == []
    swapper.fail = True
    (tmp_path / "m" / "2").mkdir()
    with pytest.raises(SwapError):
        serve_version("m", 2, swapper, registry, reason="x")
    assert swapper.serving == {"m": [1]} and ("m", 2) not in registry.rows


def test_registry_failure_after_the_swap_says_the_version_serves(tmp_path: Path) -> None:
    swapper = FakeSwapper(_repo(tmp_path, "m", 1, 2), {"m": []})
    with pytest.raises(ServedButNotRecorded) as caught:
        serve_version("m", 2, swapper, FakeRegistry(broken=True), reason="x")
    assert caught.value.version == 2 and swapper.serving == {"m": [2]}


def test_rollback_serves_the_previous_version_and_marks_the_current_rolled_back(tmp_path: Path) -> None:
    swapper = FakeSwapper(_repo(tmp_path, "m", 1, 2), {"m": [1]})
    registry = FakeRegistry()
    serve_version("m", 2, swapper, registry, reason="x")
    _, report = rollback("m", registry, swapper)
    assert report.new_version == 1 and swapper.serving == {"m": [1]}
    assert registry.get("m", 2).status == ModelStatus.ROLLED_BACK
    assert registry.get("m", 1).status == ModelStatus.SERVING
