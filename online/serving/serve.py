"""The one operation "make version N serve": hot swap in Triton, then registry bookkeeping.

Every path that changes what serves calls ``serve_version``; a swap failure leaves serving and registry as
they were, a failure after it raises ``ServedButNotRecorded``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from driftline.online.serving.registry import ModelRegistry, RegistryError
from driftline.online.serving.swap import SwapReport, TritonSwapper
from driftline.schema.records import ModelRecord, ModelStatus

Publish = Callable[[dict[str, Any]], None]


class ServedButNotRecorded(RuntimeError):
    """The swap succeeded (the version serves) but writing the registry failed."""

    def __init__(self, model: str, version: int, report: SwapReport, record: ModelRecord | None) -> None:
        super().__init__(f"{model}: version {version} serves, but the registry write failed")
        self.version, self.report, self.record = version, report, record


def version_dir(swapper: TritonSwapper, model: str, version: int) -> Path:
    """The version's folder in the Triton repository; ``RegistryError`` if it was never exported."""
    folder = Path(swapper.repository) / model / str(version)
    if not folder.is_dir():
        raise RegistryError(f"{model}: version {version} is not in the Triton repository ({folder})")
    return folder


def serve_version(
    model: str,
    version: int,
    swapper: TritonSwapper,
    registry: ModelRegistry | None = None,
    *,
    reason: str,
    record: ModelRecord | None = None,
    old_status: ModelStatus = ModelStatus.RETIRED,
    old_reason: str | None = None,
    publish: Publish | None = None,
) -> tuple[ModelRecord | None, SwapReport]:
    """Make ``version`` the only serving version of ``model``; returns its registry record and the swap.

    ``record`` is the caller's registry row for the version (the updater's candidate); without one the
    row is created from the version's ``meta.json``. ``publish`` gets the record's ``info`` alert.
    ``old_reason`` is recorded on the replaced versions (default: "replaced by version N").
    """
    folder = version_dir(swapper, model, version)
    previous = [v for v in swapper.serving_versions(model) if v != version]
    if registry is not None:
        for old in previous:
            registry.ensure(
                model, old, Path(swapper.repository) / model / str(old), ModelStatus.SERVING, "exported"
            )
    report = swapper.swap(model, version)
    served: ModelRecord | None = None
    if record is not None:
        metrics = {
            **record.metrics,
            "swap_load_s": round(report.load_s, 2),
            "swap_drain_s": round(report.drain_s, 2),
        }
        served = record.model_copy(update={"status": ModelStatus.SERVING, "metrics": metrics})
    try:
        if registry is not None:
            if served is not None:
                served = registry.save(served)
            else:
                served = registry.ensure(model, version, folder, ModelStatus.SERVING, reason)
                served = registry.set_status(served, ModelStatus.SERVING, reason)
            for old in previous:
                why = old_reason or f"replaced by version {version}"
                registry.set_status(registry.get(model, old), old_status, why)
    except Exception as exc:
        raise ServedButNotRecorded(model, version, report, served) from exc
    if publish is not None and served is not None:
        publish(served.to_alert("info"))
    return served, report


def rollback(
    model: str,
    registry: ModelRegistry,
    swapper: TritonSwapper,
    *,
    publish: Publish | None = None,
    why: str = "",
) -> tuple[ModelRecord | None, SwapReport]:
    """Serve the version that served before the current one; the current one becomes rolled_back.

    ``why`` (the automatic rollback's evidence) is recorded on the rolled-back version.
    """
    current = swapper.serving_versions(model)
    target = registry.rollback_target(model)
    return serve_version(
        model,
        target.version,
        swapper,
        registry,
        reason=f"rollback from version(s) {current}",
        old_reason=f"rolled back to version {target.version}" + (f": {why}" if why else ""),
        old_status=ModelStatus.ROLLED_BACK,
        publish=publish,
    )
