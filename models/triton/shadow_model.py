"""A candidate served as a shadow: its own Triton model beside the serving one, never answering live.

``write_shadow`` creates ``<model>__shadow`` with only the candidate's version, so it never takes live
traffic; ``remove_shadow`` drops it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from driftline.models.inference.base import shadow_name
from driftline.settings import get_settings


def write_shadow(model: str, version: int, repository: Path | None = None) -> Path:
    """Lay out ``<model>__shadow`` serving only ``version`` (an exported, unserved version of ``model``).

    The folder is assembled under a hidden name and renamed into place, so Triton never sees it half
    written; an earlier shadow of the model is replaced. Returns the shadow's folder.
    """
    from driftline.models.triton.export import (
        CONFIG_FILE,
        GPU_CONFIG_FILE,
        read_config,
        set_serving_versions,
        write_config,
    )

    repo = repository or get_settings().triton.repository
    source = repo / model / str(version)
    if not (source / "meta.json").is_file():
        raise FileNotFoundError(f"{model}: version {version} is not exported under {repo / model}")
    target = repo / shadow_name(model)
    staging = repo / f".{shadow_name(model)}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copytree(source, staging / str(version))
    for file in (CONFIG_FILE, GPU_CONFIG_FILE):
        if not (repo / model / file).is_file():
            continue
        config = read_config(repo / model / file)
        config.name = shadow_name(model)
        write_config(staging / file, config)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    # the version list and the per-version parameters (labels, encoder...) of the shadow's one version
    set_serving_versions(shadow_name(model), [version], repo)
    return target


def remove_shadow(model: str, repository: Path | None = None) -> None:
    """Delete ``model``'s shadow folder (unload it from Triton first)."""
    shutil.rmtree((repository or get_settings().triton.repository) / shadow_name(model), ignore_errors=True)
