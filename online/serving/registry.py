"""The model registry: every candidate adapter, its Triton version, status and metrics.

``ModelRecord`` rows in ClickHouse ``model_versions`` (a ReplacingMergeTree read with FINAL), so status
changes need no UPDATE and concurrent writers are safe.
"""

from __future__ import annotations

from typing import Any

from driftline.schema.records import ModelRecord, ModelStatus, insert_sql
from driftline.schema.timestamps import tick_ms


class RegistryError(RuntimeError):
    """The registry cannot answer (no serving version, unknown version)."""


class ModelRegistry:
    """Read and write ``model_versions`` through a clickhouse-driver ``Client``."""

    def __init__(self, client: Any, table: str = "model_versions") -> None:
        self.client = client
        self.table = table

    @classmethod
    def from_settings(cls) -> ModelRegistry:
        """The registry on the configured ClickHouse (one client from the factory)."""
        from driftline.clients import clickhouse_client
        from driftline.settings import get_settings

        return cls(clickhouse_client(get_settings()))

    def save(self, record: ModelRecord) -> ModelRecord:
        """Insert ``record`` as the newest row for its (task, version)."""
        record = record.model_copy(update={"updated_ts_ms": tick_ms()})
        self.client.execute(insert_sql(self.table, ModelRecord.COLUMNS), [record.to_row()])
        return record

    def set_status(self, record: ModelRecord, status: ModelStatus, reason: str | None = None) -> ModelRecord:
        """Save ``record`` with a new status (and reason)."""
        update: dict[str, Any] = {"status": status}
        if reason is not None:
            update["reason"] = reason
        return self.save(record.model_copy(update=update))

    def list(self, task: str | None = None) -> list[ModelRecord]:
        """The newest row of every version, optionally of one task, by version."""
        where, params = ("WHERE task = %(task)s", {"task": task}) if task else ("", {})
        rows = self.client.execute(
            f"SELECT {', '.join(ModelRecord.COLUMNS)} FROM {self.table} FINAL {where} "
            "ORDER BY task, created_ts_ms, toUInt32OrZero(version)",
            params,
        )
        return [ModelRecord.from_row(row) for row in rows]

    def get(self, task: str, version: int) -> ModelRecord:
        """The newest row of one version; ``RegistryError`` if unknown."""
        found = [r for r in self.list(task) if r.version == version]
        if not found:
            raise RegistryError(f"{task}: no version {version} in the registry")
        return max(found, key=lambda r: r.updated_ts_ms)

    def serving(self, task: str) -> ModelRecord | None:
        """The version recorded as serving, if any."""
        serving = [r for r in self.list(task) if r.status == ModelStatus.SERVING]
        return max(serving, key=lambda r: r.version) if serving else None

    def rollback_target(self, task: str) -> ModelRecord:
        """The most recent version that served before the current one (status retired)."""
        current = self.serving(task)
        retired = [
            r
            for r in self.list(task)
            if r.status == ModelStatus.RETIRED
            and r.version > 0
            and (current is None or r.version < current.version)
        ]
        if not retired:
            raise RegistryError(f"{task}: no earlier serving version to roll back to")
        return max(retired, key=lambda r: r.version)

    def ensure(
        self, task: str, version: int, artifact_dir: Any, status: ModelStatus, reason: str
    ) -> ModelRecord:
        """The registry row of an exported version, created from its ``meta.json`` when missing
        (versions exported by hand with ``driftline export`` have none yet)."""
        from driftline.models.artifacts import read_meta

        try:
            return self.get(task, version)
        except RegistryError:
            meta = read_meta(artifact_dir)
            return self.save(
                ModelRecord(
                    task=task,
                    version=version,
                    adapter_hash=meta.adapter_hash,
                    parent_hash=meta.parent or "",
                    status=status,
                    metrics=dict(meta.metrics),
                    reason=reason,
                    artifact_path=str(artifact_dir),
                    engine=meta.engine,
                )
            )
