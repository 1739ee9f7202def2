"""CLI commands: ``driftline rescore`` - what a version would have said about a past range.

A thin wrapper over ``driftline.streams.services.rescore`` (reading Kafka retention, classifying, storing
``rescored_labels``, the report): it parses times, draws the progress bar and prints the report.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import typer


def _ms(value: str, option: str) -> int:
    """ISO 8601 (naive means UTC) or epoch seconds/milliseconds -> epoch milliseconds."""
    from driftline.schema.timestamps import parse_timestamp, to_ms

    try:
        return to_ms(parse_timestamp(int(value) if value.isdigit() else value))
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r}: {exc}", param_hint=option) from exc


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""

    @app.command()
    def rescore(
        task: str = typer.Option(..., help="Task whose input topics are re-scored (its routes)."),
        from_: str = typer.Option(..., "--from", help="Range start: ISO 8601 (UTC if naive) or epoch s/ms."),
        to: str = typer.Option(..., help="Range end (exclusive), same forms."),
        version: int = typer.Option(None, help="Exported version to classify with (default: serving)."),
        candidate: bool = typer.Option(False, "--candidate", help="Use the newest unexported candidate."),
        chunk: int = typer.Option(512, min=1, help="Events per classify-and-store step."),
        json_out: Path = typer.Option(None, "--json", help="Also write the report here as JSON."),
    ) -> None:
        """Classify a past time range of the input topics with another version, beside the labels.

        Reads the range back from Kafka retention, writes ``rescored_labels`` (keyed by run id and
        version) and reports agreement with the original labels, accuracy on joined feedback and the
        change in label mix. Running the same command again resumes the run.
        """
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from driftline.streams.services.rescore import OutOfRetention, rescore_range

        if version is not None and candidate:
            raise typer.BadParameter("give --version or --candidate, not both")
        start, end = _ms(from_, "--from"), _ms(to, "--to")
        console = Console()
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            bar = progress.add_task(f"rescore {task}", total=None)

            def planned(run_id: str, offsets: int) -> None:
                progress.update(bar, total=offsets, description=f"rescore {task} (run {run_id})")

            try:
                run = rescore_range(
                    task,
                    start,
                    end,
                    version=version,
                    candidate=candidate,
                    chunk=chunk,
                    on_plan=planned,
                    on_chunk=lambda n: progress.advance(bar, n),
                )
                result, counts = asyncio.run(run)
            except (OutOfRetention, ValueError) as exc:
                console.print(f"[red]refused:[/red] {exc}")
                raise typer.Exit(2) from exc
        _print(console, result.to_dict(), counts)
        if json_out is not None:
            body = {
                **result.to_dict(),
                "this_run": {
                    "read": counts.read,
                    "rescored": counts.rescored,
                    "skipped": dict(counts.skipped),
                    "events_per_s": counts.events_per_s,
                },
            }
            json_out.write_text(json.dumps(body, indent=2, sort_keys=True), encoding="utf-8")


def _print(console: Any, report: dict[str, Any], counts: Any) -> None:
    """The report as two lines and a label-mix table."""
    from rich.table import Table

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    console.print(
        f"run {report['run_id']}: {report['task']} version {report['model_version']}, "
        f"{report['events']} events rescored ({counts.rescored} now, {counts.events_per_s:.0f}/s; "
        f"skipped as undecodable: {dict(counts.skipped) or 0})"
    )
    console.print(
        f"agreement with the original labels: {share(report['agreement'])} of {report['compared']}; "
        f"accuracy on {report['graded']} events with feedback: original {share(report['accuracy_original'])}"
        f", rescored {share(report['accuracy_rescored'])}; label mix change {report['mix_change']:.3f}"
    )
    table = Table(title="label mix (events with an original label)")
    for column in ("label", "original", "rescored"):
        table.add_column(column)
    for label, mix in report["label_mix"].items():
        table.add_row(label, share(mix["original"]), share(mix["rescored"]))
    console.print(table)
