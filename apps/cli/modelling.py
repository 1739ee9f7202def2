"""CLI commands: modelling (``driftline data describe``, ``driftline train``; ``export`` sits beside them).

Thin wrappers over ``driftline.models.datasets`` and ``driftline.models.cache``; torch and
transformers are imported inside the commands so ``driftline --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def dataset_table(name: str) -> Table:
    """Counts per class and split for one dataset, with totals and what de-duplication dropped."""
    from driftline.models.datasets import SPLITS, load_dataset

    dataset = load_dataset(name)
    counts = dataset.counts()
    table = Table(
        title=f"{dataset.name}: {dataset.description}",
        caption=(
            f"{len(dataset.examples)} unique texts; dropped {dataset.duplicates} duplicates and "
            f"{dataset.conflicts} texts seen under two labels. Split = sha1(normalised text) mod 100."
        ),
    )
    table.add_column("label", style="bold")
    for split in SPLITS:
        table.add_column(split, justify="right")
    table.add_column("total", justify="right", style="bold")
    for label, row in counts.items():
        table.add_row(label, *(str(row[s]) for s in SPLITS), str(sum(row.values())))
    totals = [sum(row[s] for row in counts.values()) for s in SPLITS]
    table.add_section()
    table.add_row("total", *(str(t) for t in totals), str(sum(totals)), style="bold")
    return table


def metrics_tables(metrics: dict) -> tuple[Table, Table]:
    """(per-class scores, confusion matrix) tables for an ``evaluate()`` report."""
    labels = list(metrics["labels"])
    scores = Table(
        title=f"test split: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} "
        f"(n={metrics['n']})"
    )
    for column in ("label", "precision", "recall", "f1", "support"):
        scores.add_column(column, justify="left" if column == "label" else "right")
    for label in labels:
        row = metrics["per_class"][label]
        scores.add_row(
            label, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"])
        )
    confusion = Table(title="confusion matrix (rows: true, columns: predicted)")
    confusion.add_column("true \\ pred", style="bold")
    for label in labels:
        confusion.add_column(label[:12], justify="right")
    for label, row in zip(labels, metrics["confusion"], strict=True):
        confusion.add_row(label, *(str(v) for v in row))
    return scores, confusion


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    data_app = typer.Typer(help="Labelled datasets (from installed packages).", no_args_is_help=True)
    app.add_typer(data_app, name="data")

    @data_app.command("describe")
    def describe(
        dataset: Annotated[
            str | None, typer.Argument(help="Dataset registry key (default: all datasets).")
        ] = None,
    ) -> None:
        """Print counts per class and split (train/validation/test)."""
        from driftline.models.datasets import DatasetUnavailableError, UnknownDatasetError, dataset_names

        names = [dataset] if dataset else dataset_names()
        for name in names:
            try:
                console.print(dataset_table(name))
            except (UnknownDatasetError, DatasetUnavailableError) as exc:
                console.print(f"[red]error:[/red] {exc.args[0] if exc.args else exc}")
                raise typer.Exit(2) from None

    @app.command("train")
    def train(
        task: Annotated[str, typer.Argument(help="Task name from models/tasks.yaml, e.g. news_topic.")],
        exclude_label: Annotated[
            list[str] | None,
            typer.Option("--exclude-label", help="Leave this label out of training (repeatable)."),
        ] = None,
        limit: Annotated[
            int | None,
            typer.Option(
                "--limit",
                min=1,
                help="At most N training examples per class (default: task's train.limit_per_class).",
            ),
        ] = None,
        max_length: Annotated[
            int | None, typer.Option("--max-length", min=8, help="Token limit (default: task's).")
        ] = None,
        epochs: Annotated[
            int | None, typer.Option("--epochs", min=1, help="Epochs (default: task's).")
        ] = None,
        max_steps: Annotated[
            int | None, typer.Option("--max-steps", min=1, help="Cap on optimiser steps.")
        ] = None,
        batch_size: Annotated[int | None, typer.Option("--batch-size", min=1)] = None,
        seed: Annotated[int, typer.Option("--seed")] = 0,
        force: Annotated[
            bool, typer.Option("--force", help="Retrain even if a matching artifact exists.")
        ] = False,
    ) -> None:
        """Fine-tune the task's LoRA classifier, evaluate it on the held-out test split, save the artifact.

        An artifact trained with the same task config, data and options is reused unless --force.
        """
        from driftline.models.cache import get_or_train
        from driftline.models.tasks import UnknownTaskError, get_task

        try:
            config = get_task(task)
        except UnknownTaskError as exc:
            console.print(f"[red]error:[/red] {exc.args[0]}")
            raise typer.Exit(2) from None
        try:
            result = get_or_train(
                config,
                exclude=exclude_label or [],
                limit=limit,
                max_length=max_length,
                epochs=epochs,
                max_steps=max_steps,
                batch_size=batch_size,
                seed=seed,
                force=force,
            )
        except ValueError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        meta, cfg = result.meta, result.meta.train_config
        verb = "reused cached" if result.reused else "trained"
        console.print(
            f"[green]{verb}[/green] {meta.task} artifact [bold]{result.artifact_dir}[/bold]\n"
            f"  adapter_hash {meta.adapter_hash}  data_hash {meta.data_hash}  encoder {meta.encoder}  "
            f"max_length {meta.max_length}\n"
            f"  {cfg.get('n_train')} training examples {cfg.get('train_label_counts')}, "
            f"{cfg.get('steps')} steps, "
            f"train wall time {cfg.get('train_seconds')} s ({cfg.get('examples_per_second')} ex/s, "
            f"{cfg.get('threads')} threads)"
        )
        if meta.metrics:
            for table in metrics_tables(meta.metrics):
                console.print(table)

    @app.command("export")
    def export_command(
        task: str = typer.Argument(..., help="task name from models/tasks.yaml"),
        artifact: Path | None = typer.Option(None, help="artifact folder (default: the task's latest)"),
        kind: str | None = typer.Option(
            None,
            help="cpu: python backend running the chosen engine; gpu: native onnxruntime backend with "
            "TensorRT fp16 (default: the serving model's)",
        ),
        name: str | None = typer.Option(None, help="Triton model name (default: the task name)"),
        repository: Path | None = typer.Option(None, help="model repository (default: settings)"),
        promote: bool = typer.Option(True, help="make the new version the only serving version"),
        max_queue_delay_us: int | None = typer.Option(None, help="dynamic batching queue delay"),
        preferred_batch: str | None = typer.Option(None, help="preferred batch sizes, e.g. 8,16,32,64"),
        instances: int | None = typer.Option(None, help="Triton instances of the model"),
        threads: int | None = typer.Option(
            None, help="engine threads per instance (0: the engine's default)"
        ),
    ) -> None:
        """Copy a trained artifact into the Triton repository as the next version."""
        from driftline.models.triton.export import ExportError, ServingOptions, export
        from driftline.settings import get_settings

        model_dir = (repository or get_settings().triton.repository) / (name or task)
        options = ServingOptions.for_model(
            model_dir,
            kind=kind,
            max_queue_delay_us=max_queue_delay_us,
            preferred_batch_sizes=(
                tuple(int(x) for x in preferred_batch.split(",") if x) if preferred_batch else None
            ),
            instances=instances,
            num_threads=threads,
        )
        try:
            version = export(
                task,
                artifact,
                name=name,
                repository=repository,
                promote=promote,
                options=options,
                progress=True,
            )
        except (ExportError, KeyError) as exc:
            console.print(f"[red]export failed:[/red] {exc}")
            raise typer.Exit(1) from exc
        console.print(f"exported {name or task} version {version}")
