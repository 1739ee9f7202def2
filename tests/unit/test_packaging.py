"""The wheel installs one import name, ``driftline``, and maps every code folder into it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _package_folder(package: str) -> Path:
    """The folder ``package`` lives in, by the longest ``package-dir`` prefix (as setuptools does)."""
    mapping = SETUPTOOLS["package-dir"]
    parts = package.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in mapping:
            return ROOT / mapping[prefix] / Path(*parts[n:])
    raise AssertionError(f"{package} is not under a package-dir mapping")


def test_every_code_folder_is_a_listed_package() -> None:
    listed = set(SETUPTOOLS["packages"])
    for package in listed:
        assert (_package_folder(package) / "__init__.py").is_file(), package
    found = set()
    for prefix, folder in SETUPTOOLS["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([prefix, *rel.parts]))
    assert found - listed == set(), "folders with __init__.py missing from pyproject's packages"


def test_wheel_has_only_the_driftline_namespace(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*pip, "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("driftline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"driftline"}
    for needed in (
        "driftline/models/triton/backend.py",
        "driftline/schema/migrations/0001_core.sql",
        "driftline/models/tasks.yaml",
        "driftline/online/online.yaml",
        "driftline/apps/dashboard/static/index.html",
        "driftline/compose/kafka/pom.xml",
    ):
        assert needed in names, f"{needed} missing from the wheel"
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "driftline = driftline.apps.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
