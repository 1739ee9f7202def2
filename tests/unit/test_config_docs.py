"""docs/configuration.md's settings table and the settings models list the same variables and defaults."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from driftline.settings import REPO_ROOT, setting_fields

CONFIG_PAGE = REPO_ROOT / "docs" / "configuration.md"


def docs_table() -> dict[str, str]:
    """``{variable: default cell}`` of the table in the configuration page's "## Every setting" section."""
    text = CONFIG_PAGE.read_text(encoding="utf-8")
    section = text.split("\n## Every setting\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `(DRIFTLINE_[A-Z0-9_]+)` \| ([^|]+) \|", line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    return rows


def shown(default: Any) -> str:
    """How the configuration page writes a default."""
    if isinstance(default, SecretStr):
        return "empty" if not default.get_secret_value() else "***"
    if default is None:
        return "unset"
    if default == "":
        return "empty"
    if isinstance(default, Path):
        if default.is_relative_to(REPO_ROOT):
            return f"`<repo>/{default.relative_to(REPO_ROOT)}`"
        return f"`~/{default.relative_to(Path.home())}`"
    if isinstance(default, list):
        return "`" + ",".join(map(str, default)) + "`"
    return f"`{default}`"


def test_docs_list_every_setting_and_nothing_else() -> None:
    documented = set(docs_table())
    declared = {field.env for field in setting_fields()}
    assert declared - documented == set(), "settings missing from docs/configuration.md's table"
    assert documented - declared == set(), "docs/configuration.md documents variables no setting reads"


def test_docs_defaults_match_the_models() -> None:
    table = docs_table()
    wrong = {
        f.env: (table[f.env], shown(f.default)) for f in setting_fields() if table[f.env] != shown(f.default)
    }
    assert not wrong, f"docs/configuration.md default vs model default: {wrong}"
