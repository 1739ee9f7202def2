"""Trained-model artifacts: what training writes, export copies into Triton, and the updater evolves.

An artifact is a folder (``meta.json``, ``adapter/``, ``head.safetensors``) whose ``adapter_hash`` names its
weights on every label row.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from driftline.settings import get_settings

META_FILE = "meta.json"
ADAPTER_DIR = "adapter"
HEAD_FILE = "head.safetensors"


class ArtifactMeta(BaseModel):
    """``meta.json``: what an artifact was trained for, on, and how; stamped with its content hash."""

    task: str
    labels: list[str]
    encoder: str  # models.encoders registry key
    max_length: int
    # the texts were models.normalize.normalize'd before tokenizing (serving must do the same);
    # False for artifacts written before the field existed, which saw raw text
    normalize_input: bool = False
    adapter_hash: str = ""
    data_hash: str = ""  # hash of the training examples' ids, for reproducibility
    parent: str | None = None  # adapter_hash of the artifact this one was trained from
    metrics: dict[str, object] = Field(default_factory=dict)
    train_config: dict[str, object] = Field(default_factory=dict)
    # the inference engine that serves this version (models.engines) and the measurements it was chosen
    # by, per engine name; written by models.engines.prepare_engines (meta.json is not hashed)
    engine: str = "torch-fp32"
    engines: dict[str, dict[str, object]] = Field(default_factory=dict)
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())


def artifacts_root(task: str) -> Path:
    """``$DRIFTLINE_CACHE/artifacts/<task>``: where a task's artifacts live."""
    return get_settings().cache_dir / "artifacts" / task


def new_artifact_dir(task_name: str, root: Path | None = None) -> Path:
    """A fresh, sortable artifact folder name: ``<UTC timestamp>-<random>``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return (root or artifacts_root(task_name)) / f"{stamp}-{os.urandom(3).hex()}"


def content_hash(artifact_dir: Path) -> str:
    """sha256 over the adapter and head files (names and bytes), first 16 hex digits."""
    digest = hashlib.sha256()
    files = [*sorted((artifact_dir / ADAPTER_DIR).rglob("*")), artifact_dir / HEAD_FILE]
    for file in files:
        if file.is_file():
            digest.update(file.relative_to(artifact_dir).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def write_meta(artifact_dir: Path, meta: ArtifactMeta) -> ArtifactMeta:
    """Stamp the content hash and write ``meta.json``; returns the stamped meta."""
    meta = meta.model_copy(update={"adapter_hash": content_hash(artifact_dir)})
    (artifact_dir / META_FILE).write_text(meta.model_dump_json(indent=2), encoding="utf-8")
    return meta


def update_meta(artifact_dir: Path, **fields: object) -> ArtifactMeta:
    """Rewrite ``meta.json`` with ``fields`` changed (validated), atomically; the hash is kept as it is.

    For facts recorded about an artifact after it was written (e.g. its serving engine): a reader sees
    the old or the new file, never half of one.
    """
    meta = ArtifactMeta.model_validate({**read_meta(artifact_dir).model_dump(), **fields})
    path = artifact_dir / META_FILE
    tmp = path.with_name(f".{META_FILE}.tmp-{os.getpid()}")
    try:
        tmp.write_text(meta.model_dump_json(indent=2), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return meta


def read_meta(artifact_dir: Path) -> ArtifactMeta:
    """The validated ``meta.json`` of an artifact folder."""
    return ArtifactMeta.model_validate(json.loads((artifact_dir / META_FILE).read_text(encoding="utf-8")))
