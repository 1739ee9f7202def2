"""CLI commands: demo, dashboard."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""

    @app.command("dashboard")
    def dashboard(
        port: int = typer.Option(None, "--port", help="TCP port (default: settings.dashboard_port, 8088)."),
        host: str = typer.Option(
            None, "--host", help="Bind address (default: settings.web_host, 127.0.0.1)."
        ),
    ) -> None:
        """Serve the analytics dashboard: live charts over ClickHouse, in your browser."""
        import logging

        from rich.console import Console

        from compose.settings import get_settings
        from streams.dashboard.server import serve
        from streams.dashboard.store import ClickHouseStore

        settings = get_settings()
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        console = Console()
        ch = settings.clickhouse
        console.print(f"ClickHouse [bold]{ch.user}@{ch.host}:{ch.port}/{ch.database}[/]")
        serve(
            host or settings.web_host,
            port or settings.dashboard_port,
            ClickHouseStore(ch),
            ready=lambda url: console.print(f"dashboard on [bold]{url}[/] (Ctrl+C to stop)", highlight=False),
        )
