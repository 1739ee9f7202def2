"""CLI commands: configuration — ``driftline config show``.

Prints every effective setting with the environment variable that sets it and where its value came
from (``default``, ``environment``, or ``file`` for the online-learning file's values), so "which
Kafka is this worker talking to, and why" has one answer. Secrets print as ``***``.
"""

from __future__ import annotations

import json
import os
from functools import reduce
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel, SecretStr

config_app = typer.Typer(help="Inspect driftline's configuration.", no_args_is_help=True)


def _plain(value: Any) -> Any:
    """A JSON-able form of a setting's value; secrets masked."""
    if isinstance(value, SecretStr):
        return "***" if value.get_secret_value() else ""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def effective_rows() -> list[dict[str, Any]]:
    """``{setting, env, value, source}`` for every setting, then every task's online-learning value."""
    from driftline.models.tasks import load_tasks
    from driftline.online.config import online_config, online_file_section
    from driftline.settings import env_source, get_settings, setting_fields

    settings = get_settings()
    rows = [
        {
            "setting": field.dotted,
            "env": field.env,
            "value": _plain(reduce(getattr, field.path, settings)),
            "source": env_source(field, os.environ),
        }
        for field in setting_fields()
    ]
    for task in load_tasks():
        config: BaseModel = online_config(task)
        from_file = _flatten(online_file_section(task))
        for key, value in _flatten(config.model_dump()).items():
            rows.append(
                {
                    "setting": f"online.{task}.{key}",
                    "env": "",
                    "value": _plain(value),
                    "source": f"file ({settings.online_file})" if key in from_file else "default",
                }
            )
    return rows


def show(as_json: bool = typer.Option(False, "--json", help="print a JSON list instead of a table")) -> None:
    """Print every effective setting, its environment variable and its source (secrets masked)."""
    rows = effective_rows()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for header in ("setting", "environment variable", "value", "source"):
        table.add_column(header, overflow="fold")
    for row in rows:
        value = row["value"]
        text = (
            ",".join(map(str, value)) if isinstance(value, list) else "unset" if value is None else str(value)
        )
        table.add_row(row["setting"], row["env"], text, row["source"])
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    config_app.command("show")(show)
    app.add_typer(config_app, name="config")
