"""CLI commands: learning — ``driftline updater`` and ``driftline models list|promote|rollback``.

Thin wrappers: the logic lives in ``online`` (updater, registry, swap, serving). Heavy imports
happen inside the commands so ``driftline --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import json
from functools import partial
from typing import Any

import typer

models_app = typer.Typer(
    help="Model versions: list the registry, promote a version, roll back.", no_args_is_help=True
)


def _label_set(client: Any, task: str) -> list[str]:
    """The labels ``task``'s next version may have: declared, then accepted (``task_labels``)."""
    from driftline.models.tasks import get_task
    from driftline.online.labels.task_labels import label_set, task_labels

    return label_set(get_task(task), task_labels(client, task, feedback=False))


def _alert_publisher(loop: asyncio.AbstractEventLoop | None = None, producer: Any = None):
    """A sync ``publish(alert)``: row in ClickHouse ``alerts`` and, with a producer, the alerts topic."""
    from driftline.clients import clickhouse_client
    from driftline.schema.records import AlertRecord, insert_sql
    from driftline.settings import get_settings

    settings = get_settings()
    client = clickhouse_client(settings)

    def publish(alert: dict[str, Any]) -> None:
        record = AlertRecord(**alert)
        client.execute(
            insert_sql(AlertRecord.TABLE, AlertRecord.COLUMNS), [record.to_row()], types_check=False
        )
        if producer is not None and loop is not None:
            payload = record.model_dump_json().encode()
            future = asyncio.run_coroutine_threadsafe(
                producer.send_and_wait(settings.kafka.topics.alerts, payload, key=record.task.encode()), loop
            )
            future.result(timeout=30)

    return publish


def _registry_and_swapper():
    from driftline.online.serving.registry import ModelRegistry
    from driftline.online.serving.swap import TritonSwapper

    return ModelRegistry.from_settings(), TritonSwapper(log=typer.echo)


@models_app.command("list")
def list_models(task: str = typer.Option(None, help="Only this task.")) -> None:
    """Every registered model version with status and headline metrics."""
    from rich.console import Console
    from rich.table import Table

    from driftline.online.serving.registry import ModelRegistry

    table = Table(title="model versions")
    for column in ("task", "version", "status", "adapter", "parent", "recent acc", "orig acc", "reason"):
        table.add_column(column)
    for r in ModelRegistry.from_settings().list(task):
        m = r.metrics
        table.add_row(
            r.task,
            str(r.version or "-"),
            r.status.value,
            r.adapter_hash,
            r.parent_hash or "-",
            str(m.get("candidate_recent", m.get("accuracy", "-"))),
            str(m.get("candidate_original", "-")),
            r.reason[:60],
        )
    Console().print(table)


@models_app.command("promote")
def promote(
    version: int = typer.Argument(..., help="Triton version number to serve."),
    task: str = typer.Option("news_topic", help="Task (Triton model name)."),
) -> None:
    """Hot-swap the task to VERSION (already exported under triton_repo/<task>/VERSION)."""
    from driftline.online.serving.serve import serve_version

    registry, swapper = _registry_and_swapper()
    _, report = serve_version(
        task, version, swapper, registry, reason="promoted by operator", publish=_alert_publisher()
    )
    typer.echo(
        f"{task}: serving version {version} (was {report.old_versions}; "
        f"load {report.load_s:.1f}s, drain {report.drain_s:.1f}s)"
    )


@models_app.command("rollback")
def rollback_cmd(task: str = typer.Option("news_topic", help="Task (Triton model name).")) -> None:
    """Serve the version that served before the current one again."""
    from driftline.online.serving.serve import rollback

    registry, swapper = _registry_and_swapper()
    _, report = rollback(task, registry, swapper, publish=_alert_publisher())
    typer.echo(f"{task}: rolled back to version {report.new_version} (from {report.old_versions})")


def updater(
    task: list[str] = typer.Option(["news_topic"], "--task", help="Task(s) to keep updated."),
    group_id: str = typer.Option("driftline-updater", help="Kafka consumer group."),
    once: str = typer.Option("", help="Run one update now with this trigger reason, then exit."),
    warm_only: bool = typer.Option(
        False,
        "--warm-only",
        help="Embed the serving versions' replay and test texts into the feature cache "
        "(cache_dir/features), then exit: the updater started next answers its first drift warm.",
    ),
) -> None:
    """Run the updater: drift alerts + new feedback -> LoRA update -> evaluate -> hot swap."""
    from driftline.apps.cli.pipeline import kafka_preflight, yield_cpu_to_serving
    from driftline.clients import kafka_producer
    from driftline.online.config import online_config
    from driftline.online.serving.registry import ModelRegistry
    from driftline.online.serving.swap import TritonSwapper
    from driftline.online.update.sources import ClickHouseSource
    from driftline.online.update.updater import Updater
    from driftline.settings import get_settings
    from driftline.streams.services.update_loop import run_updater

    yield_cpu_to_serving()
    settings = get_settings()
    kafka_preflight()

    async def main() -> None:
        producer = kafka_producer(settings)
        await producer.start()
        try:
            publish = _alert_publisher(asyncio.get_running_loop(), producer)
            registry = ModelRegistry.from_settings()
            updaters = {
                name: Updater(
                    name,
                    source=ClickHouseSource(
                        registry.client, since_ts_ms=online_config(name).updater.feedback_since_ts_ms
                    ),
                    registry=registry,
                    swapper=TritonSwapper(log=typer.echo),
                    publish=publish,
                    log=typer.echo,
                    label_set=partial(_label_set, registry.client, name),
                    features_dir=settings.cache_dir / "features",  # warm again at once after a restart
                )
                for name in task
            }
            if warm_only:
                for name, up in updaters.items():
                    left = await asyncio.to_thread(up.warm)
                    typer.echo(f"{name}: {len(up.features)} texts in the feature cache, {left} left")
                return
            if once:
                for name, up in updaters.items():
                    outcome = await asyncio.to_thread(up.run_update, once)
                    typer.echo(
                        json.dumps(
                            {
                                "task": name,
                                "promoted": outcome.promoted,
                                "version": outcome.version,
                                "reason": outcome.reason,
                            }
                        )
                    )
                return
            typer.echo(
                f"updater watching {settings.kafka.topics.alerts} and {settings.kafka.topics.feedback} "
                f"for {', '.join(task)}"
            )
            await run_updater(
                task,
                updaters,
                bootstrap=settings.kafka.bootstrap,
                alerts_topic=settings.kafka.topics.alerts,
                feedback_topic=settings.kafka.topics.feedback,
                group_id=group_id,
            )
        finally:
            await producer.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        typer.echo("updater stopped")


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("updater")(updater)
    app.add_typer(models_app, name="models")
