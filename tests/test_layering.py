"""Imports flow one way: compose <- models <- online <- streams (bench and tests may use all).

The layering keeps the serving path (models) free of stream-processing concerns and lets the updater
(online) reuse training without dragging Faust in. This test fails on any upward import, including
lazy imports inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["compose", "models", "online", "streams"]
FORBIDDEN = {layer: set(LAYERS[i + 1 :]) for i, layer in enumerate(LAYERS)}
FORBIDDEN["triton_repo"] = {"online", "streams"}


def _imported_top_levels(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_upward_imports(package: str) -> None:
    violations = []
    for file in _python_files(package):
        bad = _imported_top_levels(file.read_text(encoding="utf-8")) & FORBIDDEN[package]
        if bad:
            violations.append(f"{file.relative_to(ROOT)} imports {sorted(bad)}")
    assert not violations, "upward imports break the layering:\n" + "\n".join(violations)


def test_layering_checker_catches_a_violation() -> None:
    assert _imported_top_levels("def f():\n    from streams.app import app\n") == {"streams"}
