"""CLI commands: ``driftline labels list|accept``: the open taxonomy's labels (online.labels.task_labels)."""

from __future__ import annotations

import typer

labels_app = typer.Typer(help="Labels a task's feedback proposed, and accepting them.", no_args_is_help=True)


@labels_app.command("list")
def list_labels(task: str = typer.Argument(..., help="The task.")) -> None:
    """The task's declared labels and the proposed or accepted ones, with their feedback counts."""
    from rich.console import Console
    from rich.table import Table

    from driftline.clients import clickhouse_client
    from driftline.models.tasks import get_task
    from driftline.online.labels.task_labels import label_set, task_labels
    from driftline.settings import get_settings

    config = get_task(task)
    client = clickhouse_client(get_settings().clickhouse)
    try:
        rows = task_labels(client, task)
    finally:
        client.disconnect()
    table = Table(title=f"{task} labels (new_labels: {config.new_labels})")
    for column in ("label", "status", "source", "feedback", "examples"):
        table.add_column(column)
    for label in config.labels:
        table.add_row(label, "declared", "tasks.yaml", "", "")
    for r in rows:
        table.add_row(r.label, r.status, r.source, str(r.feedback), ", ".join(r.examples[:3]))
    console = Console()
    console.print(table)
    console.print(f"label set of the next version: {', '.join(label_set(config, rows))}", highlight=False)


@labels_app.command("accept")
def accept(
    task: str = typer.Argument(..., help="The task."),
    label: str = typer.Argument(..., help="The new label."),
) -> None:
    """Accept a label for the task: recorded in task_labels, it joins the task's label set."""
    from driftline.clients import clickhouse_client
    from driftline.models.tasks import get_task
    from driftline.online.labels.task_labels import LabelError, accept_label
    from driftline.settings import get_settings

    client = clickhouse_client(get_settings().clickhouse)
    try:
        record = accept_label(client, get_task(task), label)
    except LabelError as exc:
        typer.echo(f"not accepted: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        client.disconnect()
    typer.echo(f"{task}: {label!r} accepted ({record.source})")


def register(app: typer.Typer) -> None:
    """Add the ``labels`` group to ``app``."""
    app.add_typer(labels_app, name="labels")
