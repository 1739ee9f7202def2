"""Operator actions on serving versions: promote a given version, roll back to the previous one.

Both are a Triton hot swap (``driftline.online.swap``) followed by registry bookkeeping, and both publish an
alert saying what changed. The swap comes first: if it fails, the registry is not touched and the
old version is still serving.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from driftline.online.registry import ModelRegistry, RegistryError
from driftline.online.swap import SwapReport, TritonSwapper
from driftline.schema.records import ModelRecord, ModelStatus


def _version_dir(swapper: TritonSwapper, task: str, version: int) -> Path:
    folder = Path(swapper.repository) / task / str(version)
    if not folder.is_dir():
        raise RegistryError(f"{task}: version {version} is not in the Triton repository ({folder})")
    return folder


def promote_version(
    task: str,
    version: int,
    registry: ModelRegistry,
    swapper: TritonSwapper,
    *,
    reason: str = "promoted by operator",
    old_status: ModelStatus = ModelStatus.RETIRED,
    publish: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[ModelRecord, SwapReport]:
    """Make ``version`` the serving version; the versions it replaces get ``old_status``."""
    folder = _version_dir(swapper, task, version)
    previous = swapper.serving_versions(task)
    for old in previous:  # register hand-exported versions so they can be rolled back to
        if old != version:
            registry.ensure(
                task, old, Path(swapper.repository) / task / str(old), ModelStatus.SERVING, "exported"
            )
    report = swapper.swap(task, version)
    record = registry.ensure(task, version, folder, ModelStatus.SERVING, reason)
    record = registry.set_status(record, ModelStatus.SERVING, reason)
    for old in previous:
        if old != version:
            registry.set_status(registry.get(task, old), old_status, f"replaced by version {version}")
    if publish:
        publish(record.to_alert("info"))
    return record, report


def rollback(
    task: str,
    registry: ModelRegistry,
    swapper: TritonSwapper,
    *,
    publish: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[ModelRecord, SwapReport]:
    """Serve the version that served before the current one; the current one becomes rolled_back."""
    current = swapper.serving_versions(task)
    target = registry.rollback_target(task)
    return promote_version(
        task,
        target.version,
        registry,
        swapper,
        reason=f"rollback from version(s) {current}",
        old_status=ModelStatus.ROLLED_BACK,
        publish=publish,
    )
