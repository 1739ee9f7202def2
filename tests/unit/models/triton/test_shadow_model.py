"""The shadow's Triton folder (models.triton.shadow_model): serves only the candidate, removed cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_the_shadow_folder_serves_only_the_candidate(tmp_path: Path) -> None:
    from driftline.models.artifacts import ArtifactMeta, write_meta
    from driftline.models.triton.export import read_config
    from driftline.models.triton.shadow_model import remove_shadow, shadow_name, write_shadow

    model = tmp_path / "m"
    for version in (1, 2):
        (model / str(version)).mkdir(parents=True)
        meta = ArtifactMeta(task="news_topic", labels=["a", "b"], encoder="minilm", max_length=64,
                            adapter_hash=f"h{version}", engine="ort-fp32")  # fmt: skip
        write_meta(model / str(version), meta)
    (model / "config.pbtxt").write_text(
        'name: "m"\nbackend: "python"\nversion_policy { specific { versions: 1 } }\n'
        'parameters { key: "versions" value { string_value: "{}" } }\n'
    )
    with pytest.raises(FileNotFoundError):
        write_shadow("m", 3, tmp_path)
    folder = write_shadow("m", 2, tmp_path)
    assert folder == tmp_path / shadow_name("m") and (folder / "2" / "meta.json").is_file()
    config = read_config(folder / "config.pbtxt")
    assert config.name == "m__shadow" and list(config.version_policy.specific.versions) == [2]
    assert list(json.loads(config.parameters["versions"].string_value)) == ["2"]
    assert list(read_config(model / "config.pbtxt").version_policy.specific.versions) == [1]  # untouched
    remove_shadow("m", tmp_path)
    assert not folder.exists()
