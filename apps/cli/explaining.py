"""CLI commands: ``driftline explainer`` (the service) and ``driftline explain EVENT_ID`` (one event).

``explain`` prints the labelling version's stored explanation, or computes and stores one (``on_demand``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from typing import Any

import typer

from driftline.apps.cli.pipeline import LOGLEVELS, kafka_preflight, yield_cpu_to_serving
from driftline.schema.records import ExplanationRecord
from driftline.settings import Settings, get_settings

LABEL_COLUMNS = (
    "task",
    "event_id",
    "text",
    "label",
    "confidence",
    "model_name",
    "model_version",
    "event_ts_ms",
)


class ExplainError(RuntimeError):
    """The event cannot be explained (unknown id, ambiguous id, version gone); the message says why."""


def find_label(client: Any, event_id: str, task: str | None) -> dict[str, Any]:
    """The event's ``labels`` row (as a dict of ``LABEL_COLUMNS``); ``ExplainError`` when there is
    none, or when the id was labelled for several tasks and ``task`` does not pick one."""
    where = "event_id = %(event_id)s" + (" AND task = %(task)s" if task else "")
    rows = client.execute(
        f"SELECT {', '.join(LABEL_COLUMNS)} FROM labels FINAL WHERE {where} ORDER BY task",
        {"event_id": event_id, "task": task or ""},
    )
    if not rows:
        scope = f" for task {task!r}" if task else ""
        raise ExplainError(f"no labelled event with id {event_id!r}{scope} in the labels table")
    if len(rows) > 1:
        tasks = ", ".join(row[0] for row in rows)
        raise ExplainError(f"event id {event_id!r} was labelled for several tasks ({tasks}): pass --task")
    return dict(zip(LABEL_COLUMNS, rows[0], strict=True))


def stored_explanation(client: Any, label: dict[str, Any]) -> ExplanationRecord | None:
    """The stored successful explanation of this event by the version that labelled it, or None."""
    rows = client.execute(
        f"SELECT {', '.join(ExplanationRecord.COLUMNS)} FROM explanations FINAL "
        "WHERE task = %(task)s AND event_id = %(event_id)s AND model_version = %(model_version)s "
        "AND error = ''",
        {key: label[key] for key in ("task", "event_id", "model_version")},
    )
    return ExplanationRecord.from_row(rows[0]) if rows else None


def compute_explanation(settings: Settings, label: dict[str, Any]) -> ExplanationRecord:
    """Explain the event with its version's weights (reason ``on_demand``); ``ExplainError`` on failure."""
    from driftline.models.explain.policy import ExplainReason
    from driftline.models.explain.pool import ExplainerPool, ExplainRequest

    cfg = settings.explainer
    pool = ExplainerPool(
        settings.triton.repository, capacity=1, device=cfg.device, num_threads=cfg.torch_threads or None
    )
    request = ExplainRequest(
        task=label["task"],
        event_id=label["event_id"],
        text=label["text"],
        label=label["label"],
        confidence=round(float(label["confidence"]), 6),  # a Float32 column
        model_name=label["model_name"],
        model_version=label["model_version"],
        event_ts_ms=int(label["event_ts_ms"]),
        reason=ExplainReason.ON_DEMAND.value,
    )
    (record,) = pool.explain([request])
    if record.error:
        raise ExplainError(f"cannot explain {label['event_id']!r}: {record.error}")
    return record


def explain_event(
    event_id: str, *, task: str | None = None, recompute: bool = False, settings: Settings | None = None
) -> tuple[ExplanationRecord, str]:
    """(explanation, ``stored`` | ``computed``) for a labelled event; a computed one is stored."""
    from driftline.clients import clickhouse_client
    from driftline.schema.records import insert_sql

    settings = settings or get_settings()
    client = clickhouse_client(settings)
    try:
        label = find_label(client, event_id, task)
        if not recompute:
            stored = stored_explanation(client, label)
            if stored is not None:
                return stored, "stored"
        record = compute_explanation(settings, label)
        client.execute(
            insert_sql(ExplanationRecord.TABLE, ExplanationRecord.COLUMNS),
            [record.to_row()],
            types_check=False,
        )
        return record, "computed"
    finally:
        client.disconnect()


def print_explanation(record: ExplanationRecord, source: str) -> None:
    """A rich table of the words and scores, with the decision it explains."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{record.task} / {record.event_id}",
        caption=(
            f"label {record.label} ({record.confidence:.3f}) by {record.model_name} v{record.model_version}; "
            f"{record.method}, reason {record.reason}, {source}"
        ),
    )
    table.add_column("#", justify="right")
    table.add_column("word")
    table.add_column("score", justify="right")
    for rank, (word, score) in enumerate(record.explanation, start=1):
        table.add_row(str(rank), word, f"{score:+.4f}", style="green" if score > 0 else "red")
    Console().print(table)


def explain(
    event_id: str = typer.Argument(..., help="The event's id (the labels row's event_id)."),
    task: str = typer.Option(None, "--task", help="The task, when the id was labelled for several."),
    recompute: bool = typer.Option(False, "--recompute", help="Compute again even if one is stored."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Explain one labelled event: the top words behind its label, stored or computed now."""
    from clickhouse_driver.errors import Error as ClickHouseError

    from driftline.clients import explain_clickhouse_error

    try:
        record, source = explain_event(event_id, task=task, recompute=recompute)
    except ExplainError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except (ClickHouseError, OSError) as exc:  # unreachable, or not migrated (`driftline stack init`)
        typer.echo(f"error: {explain_clickhouse_error(exc)}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps({**record.model_dump(mode="json"), "source": source}, ensure_ascii=False))
    else:
        print_explanation(record, source)


def explainer(
    group_id: str = typer.Option(None, help="Kafka consumer group (default: settings explainer.group_id)."),
    loglevel: str = typer.Option("info", help="debug | info | warning | error"),
) -> None:
    """Run the explainer service: explain the predictions each task's policy selects, off the serving path."""
    from driftline.kafka_admin import create_missing_topics
    from driftline.logs import json_handler
    from driftline.models.explain.pool import ExplainerPool
    from driftline.streams.services.explanations import ExplainerService
    from driftline.streams.sinks.clickhouse import explanations_sink

    if loglevel not in LOGLEVELS:
        raise typer.BadParameter(f"loglevel must be one of {LOGLEVELS}")
    yield_cpu_to_serving()
    logging.basicConfig(level=loglevel.upper(), handlers=[json_handler()], force=True)
    kafka_preflight()
    settings = get_settings()
    if group_id:
        settings = settings.model_copy(
            update={"explainer": settings.explainer.model_copy(update={"group_id": group_id})}
        )
    cfg, pipeline = settings.explainer, settings.pipeline
    pool = ExplainerPool(
        settings.triton.repository,
        capacity=cfg.cached_versions,
        device=cfg.device,
        num_threads=cfg.torch_threads or None,
    )
    sink = explanations_sink(
        settings=settings.clickhouse,
        max_rows=pipeline.sink_max_rows,
        max_age_s=pipeline.sink_max_age_s,
        backoff_s=pipeline.sink_backoff_s,
        backoff_max_s=pipeline.sink_backoff_max_s,
    )

    async def main() -> None:
        await create_missing_topics(settings, [settings.kafka.topics.predictions])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await ExplainerService(settings, pool, sink).run(stop)

    asyncio.run(main())


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("explainer")(explainer)
    app.command("explain")(explain)
