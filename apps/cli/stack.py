"""CLI commands: ``driftline stack up|down|status|logs`` (over ``driftline.compose.stack.manager``)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)

ServicesOpt = Annotated[
    list[str] | None,
    typer.Option("--service", "-s", help="Limit to these services (kafka, clickhouse, triton); repeatable."),
]


ClusterOpt = Annotated[
    bool,
    typer.Option(
        "--cluster",
        help="Three Kafka brokers (KRaft, SASL_SSL with SCRAM, RF 3, min ISR 2) instead of one; "
        "same as DRIFTLINE_KAFKA__NODES=3 with SECURITY_PROTOCOL=SASL_SSL.",
    ),
]


def _stack(services: list[str] | None, cluster: bool = False):
    from driftline.compose.stack.kafka import cluster_settings
    from driftline.compose.stack.manager import Stack
    from driftline.settings import get_settings

    settings = cluster_settings(get_settings()) if cluster else None
    return Stack(settings, only=services or None)


def _client_environment(stack) -> list[str]:
    """``export`` lines that point driftline's clients at a secured local Kafka."""
    from driftline.clients import TLS_PROTOCOLS
    from driftline.compose.stack.kafka import stack_client_settings

    kafka = stack_client_settings(stack.settings).kafka
    if kafka.security_protocol == "PLAINTEXT" and kafka.nodes == 1:
        return []
    values = {
        "NODES": kafka.nodes,
        "SECURITY_PROTOCOL": kafka.security_protocol,
        "REPLICATION_FACTOR": kafka.replication_factor,
        "MIN_INSYNC_REPLICAS": kafka.min_insync_replicas,
    }
    if kafka.security_protocol in TLS_PROTOCOLS:
        values["SSL_CAFILE"] = kafka.ssl_cafile
    return [f"export DRIFTLINE_KAFKA__{name}={value}" for name, value in values.items()]


def _fail(exc: Exception) -> typer.Exit:
    err_console.print(f"[bold red]stack error[/] {exc}", markup=True, highlight=False)
    return typer.Exit(code=1)


def up(services: ServicesOpt = None, cluster: ClusterOpt = False) -> None:
    """Start Kafka, ClickHouse and Triton on 127.0.0.1 (idempotent), create topics, apply migrations."""
    from driftline.compose.stack.process import StackError

    try:
        stack = _stack(services, cluster)
        result = stack.up(report=lambda msg: console.print(msg, highlight=False))
    except StackError as exc:
        raise _fail(exc) from None
    console.print(
        f"[green]stack up[/] in {result.seconds:.1f}s "
        f"(started: {', '.join(result.started) or 'none'}; "
        f"already running: {', '.join(result.already_running) or 'none'}); run dir {stack.settings.run_dir}"
    )
    lines = _client_environment(stack)
    if lines:
        console.print("clients of this Kafka need (plus DRIFTLINE_KAFKA__SASL_USERNAME / _PASSWORD):")
        for line in lines:
            typer.echo(line)  # plain, never wrapped: meant to be pasted into a shell


def down(services: ServicesOpt = None, cluster: ClusterOpt = False) -> None:
    """Stop the services this run dir started (pid files only; every Kafka node), wait for their ports."""
    from driftline.compose.stack.process import StackError

    try:
        _stack(services, cluster).down(report=lambda msg: console.print(msg, highlight=False))
    except StackError as exc:
        raise _fail(exc) from None


def status(services: ServicesOpt = None, cluster: ClusterOpt = False) -> None:
    """Health, pid, ports and resident memory of each service. Exit code 1 if any is not healthy."""
    stack = _stack(services, cluster)
    table = Table(title=f"driftline stack ({stack.settings.run_dir})")
    for column in ("service", "state", "pid", "ports", "RSS"):
        table.add_column(column)
    statuses = stack.status()
    for s in statuses:
        colour = "green" if s.healthy else ("yellow" if s.running else "red")
        table.add_row(
            s.name,
            f"[{colour}]{s.detail}[/]",
            str(s.pid or "-"),
            ", ".join(f"{k} {v}" for k, v in s.ports.items()),
            f"{s.rss_bytes / 2**20:.0f} MiB" if s.running else "-",
        )
    console.print(table)
    if not all(s.healthy for s in statuses):
        raise typer.Exit(code=1)


def logs(
    services: ServicesOpt = None,
    cluster: ClusterOpt = False,
    tail: Annotated[int, typer.Option("--tail", "-n", help="Also print the last N lines of each log.")] = 0,
) -> None:
    """Where each service logs; with --tail N, the last N lines too."""
    from driftline.compose.stack import process

    for svc in _stack(services, cluster).services:
        console.print(f"[bold]{svc.name}[/]: {svc.log_file}  (stdout/stderr: {svc.stdout_file})")
        if tail > 0:
            for path in dict.fromkeys([svc.log_file, svc.stdout_file]):
                text = process.tail(path, tail)
                if text:
                    console.rule(str(path))
                    console.print(text, markup=False, highlight=False)


def init() -> None:
    """Create topics and apply migrations on the configured (possibly remote) Kafka and ClickHouse."""
    from driftline.compose.stack.manager import init_remote
    from driftline.compose.stack.process import StackError

    try:
        init_remote(report=lambda msg: console.print(msg, highlight=False))
    except StackError as exc:
        raise _fail(exc) from None


def smoke() -> None:
    """Prove the running stack works: Kafka round-trip, ClickHouse tables, Triton echo inference."""
    from driftline.compose.stack.process import StackError
    from driftline.compose.stack.smoke import run_smoke

    try:
        for line in run_smoke():
            console.print(f"[green]ok[/] {line}", highlight=False)
    except StackError as exc:
        raise _fail(exc) from None


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    stack_app = typer.Typer(help="Run the local Kafka / ClickHouse / Triton stack.", no_args_is_help=True)
    stack_app.command("up")(up)
    stack_app.command("down")(down)
    stack_app.command("status")(status)
    stack_app.command("logs")(logs)
    stack_app.command("init")(init)
    stack_app.command("smoke")(smoke)
    app.add_typer(stack_app, name="stack")
