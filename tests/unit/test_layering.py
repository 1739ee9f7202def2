"""Imports flow one way, floor by floor, inside the one ``driftline`` namespace.

Floors, bottom to top (each may import only the floors listed as allowed for it)::

    ground   driftline.settings, .clients, .schema, .logs, .kafka_admin  (driftline/)
    compose  driftline.compose: runs the services                         (compose/)
    models   driftline.models: serving path, training                    (models/)
    online   driftline.online: drift, registry, updater                  (online/)
    streams  driftline.streams: Faust stream processing                  (streams/)
    apps     driftline.apps: CLI, demo, dashboard, live-stack test kit   (apps/)

The serving path (models) stays free of stream processing and of the service launcher; the updater
(online) reuses training without dragging Faust in; applications sit on top. Nothing in the library
imports ``tests`` or ``bench``, and ``bench`` imports nothing from ``tests``. Lazy imports inside
functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: floor -> the folder its code lives in
FOLDERS = {
    "ground": ROOT / "driftline",
    "compose": ROOT / "compose",
    "models": ROOT / "models",
    "online": ROOT / "online",
    "streams": ROOT / "streams",
    "apps": ROOT / "apps",
    "triton_repo": ROOT / "triton_repo",
    "bench": ROOT / "bench",
}
ALLOWED = {
    "ground": {"ground"},
    "compose": {"ground", "compose"},
    "models": {"ground", "models"},
    "online": {"ground", "models", "online"},
    "streams": {"ground", "models", "online", "streams"},
    "apps": {"ground", "compose", "models", "online", "streams", "apps"},
    "triton_repo": {"ground", "models"},
    "bench": {"ground", "compose", "models", "online", "streams", "apps", "bench"},
}
PROJECT_TOP_LEVELS = {"driftline", "tests", "bench", "compose", "models", "online", "streams", "apps"}


def floor_of_module(name: str) -> str | None:
    """The floor an imported module belongs to; None for third-party modules."""
    parts = name.split(".")
    if parts[0] in {"tests", "bench"}:
        return parts[0]
    if parts[0] != "driftline":
        return None
    if len(parts) > 1 and parts[1] in {"apps", "compose", "models", "online", "streams"}:
        return parts[1]
    return "ground"


def imported_modules(source: str) -> set[str]:
    """Absolute module names imported anywhere in ``source`` (function bodies included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _files(floor: str) -> list[Path]:
    return sorted(FOLDERS[floor].rglob("*.py"))


@pytest.mark.parametrize("floor", sorted(FOLDERS))
def test_no_upward_imports(floor: str) -> None:
    violations = []
    for file in _files(floor):
        for module in imported_modules(file.read_text(encoding="utf-8")):
            top = module.split(".")[0]
            if top in PROJECT_TOP_LEVELS - {"driftline", "tests", "bench"}:
                violations.append(f"{file.relative_to(ROOT)} imports {module} (outside the namespace)")
                continue
            target = floor_of_module(module)
            if target is not None and target not in ALLOWED[floor]:
                violations.append(f"{file.relative_to(ROOT)} imports {module} ({floor} -> {target})")
    assert not violations, "imports break the layering:\n" + "\n".join(violations)


def test_layering_checker_catches_a_violation() -> None:
    modules = imported_modules("def f():\n    from driftline.streams.app import app\n")
    assert modules == {"driftline.streams.app"}
    assert floor_of_module("driftline.streams.app") not in ALLOWED["online"]
    assert floor_of_module("driftline.settings") == "ground"
    assert floor_of_module("driftline.apps.cli") == "apps"
    assert floor_of_module("numpy") is None
