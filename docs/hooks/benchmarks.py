"""MkDocs hook: render ``bench/results/*.json`` into the Benchmarks page at build time.

``bench/results/`` is git-ignored, so a clean clone (CI) has no results: the page then says so and
the build still passes. For each JSON file found the hook writes a table: the file, when it was
measured (its own date field, else the file's modification time), the machine (CPU count and
Python when recorded), and every top-level numeric key. Nested figures stay in the file.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: the line in docs/benchmarks.md that the tables replace
MARKER = "<!-- bench-results -->"
#: where the benchmarks write, relative to the folder of mkdocs.yml
RESULTS = Path("bench") / "results"
#: date fields the benchmarks write, in the order they are looked for (top level, then ``meta``)
DATE_KEYS = ("when", "started", "created_at", "recorded_at", "date")
#: where a benchmark records the machine: a dict at the top level or the keys of ``meta``
MACHINE_KEYS = ("machine", "host", "meta")


def _date(doc: dict[str, Any], path: Path) -> str:
    """The run's own date when the file records one, else the file's modification time."""
    for where in (doc, doc.get("meta") if isinstance(doc.get("meta"), dict) else {}):
        for key in DATE_KEYS:
            if isinstance(where.get(key), str):
                return f"{where[key]} (`{key}`)"
    stamp = datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{stamp} (file modified; the file records no date)"


def _machine(doc: dict[str, Any]) -> str:
    """CPU count, Python version and load, from whichever of the known places holds them."""
    for key in MACHINE_KEYS:
        found = doc.get(key)
        if isinstance(found, dict) and "cpus" in found:
            parts = [f"{found['cpus']} CPUs"]
            if "python" in found:
                parts.append(f"Python {found['python']}")
            for load in ("load_avg_1m", "load_before"):
                if load in found:
                    parts.append(f"load {found[load]}")
            return ", ".join(parts)
    return "not recorded"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def render_file(path: Path, root: Path) -> str:
    """One result file as a heading and a markdown table (or a line saying it could not be read)."""
    name = path.relative_to(root).as_posix()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"### `{name}`\n\nCould not be read: {type(exc).__name__}: {exc}\n"
    if not isinstance(doc, dict):
        return f"### `{name}`\n\nNot a JSON object; nothing to show.\n"
    lines = [
        f"### `{name}`",
        "",
        f"Measured: {_date(doc, path)}. Machine: {_machine(doc)}.",
        "",
    ]
    numbers = {key: value for key, value in doc.items() if _number(value)}
    if not numbers:
        lines.append("No top-level numeric keys; the figures are nested (open the file).")
        return "\n".join(lines) + "\n"
    lines += ["| key | value |", "|---|---:|"]
    lines += [f"| `{key}` | {value} |" for key, value in numbers.items()]
    return "\n".join(lines) + "\n"


def render(root: Path) -> str:
    """Every ``bench/results/*.json`` under ``root``, or a plain note when there is none."""
    files = sorted((root / RESULTS).glob("*.json"))
    if not files:
        return (
            f"No benchmark results were present when this site was built (`{RESULTS.as_posix()}/` "
            "holds no JSON file). The folder is git-ignored, so a clean clone has none: run a "
            "benchmark below, then build the site again."
        )
    intro = f"{len(files)} result file(s) found in `{RESULTS.as_posix()}/` when this site was built."
    return "\n".join([intro, "", *(render_file(path, root) for path in files)])


def on_page_markdown(markdown: str, *, page: Any, config: Any, files: Any) -> str:
    """Replace the marker on the Benchmarks page with the rendered results."""
    if MARKER not in markdown:
        return markdown
    root = Path(config["config_file_path"]).resolve().parent
    return markdown.replace(MARKER, render(root))
