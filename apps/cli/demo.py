"""CLI commands: demo, dashboard."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""

    @app.command("demo")
    def demo(
        quick: bool = typer.Option(False, "--quick", help="Small slices: the same story in a few minutes."),
        run_dir: Path | None = typer.Option(
            None, "--run-dir", help="Report folder (default: <run dir>/demo/<UTC timestamp>)."
        ),
        keep_running: bool = typer.Option(
            False, "--keep-running", help="Leave the workers and the updater running afterwards."
        ),
        dashboard: bool = typer.Option(True, help="Start the dashboard (left running) if it is available."),
        workers: int = typer.Option(1, min=1, help="Pipeline worker processes."),
        rate: float = typer.Option(None, min=0.1, help="Events per second (default: the preset's)."),
        seed: int = typer.Option(0, help="Seed of the stream (which texts, which get feedback)."),
        new_class: str = typer.Option(
            "entertainment",
            "--new-class",
            help="The news class the first adapter never sees (any BBC class).",
        ),
        new_class_share: float = typer.Option(
            None,
            "--new-class-share",
            min=0.01,
            max=1.0,
            help="Share of the shifted news stream that is the new class (default: the preset's).",
        ),
        labeler: str = typer.Option(
            "active",
            "--labeler",
            help="active: answer the workers' label requests; random: label a random share of events.",
        ),
        label_budget: float = typer.Option(
            None,
            "--label-budget",
            min=0.01,
            max=1.0,
            help="Share of news events labelled (random) or requested (active; boosted during a drift).",
        ),
        open_taxonomy: bool = typer.Option(
            False,
            "--open-taxonomy",
            help="The new class is not declared at all: learned through new_labels: accept.",
        ),
        shadow: bool = typer.Option(
            False,
            "--shadow",
            help="A candidate that passed the gate first runs as a shadow on mirrored live traffic "
            "(as in production) before it serves.",
        ),
    ) -> None:
        """The main job: stack, initial models, workers, updater, a replayed stream with an emerging
        class, live progress, and a report with plots (report.md) in the run folder."""
        from rich.console import Console

        from driftline.apps.demo.options import DemoConfig
        from driftline.apps.demo.runner import DemoError, default_run_dir, run_demo
        from driftline.compose.stack.process import StackError
        from driftline.models.tasks import get_task

        news_labels = get_task("news_topic").labels
        if new_class not in news_labels:
            raise typer.BadParameter(
                f"{new_class!r} is not a news_topic class {news_labels}", param_hint="--new-class"
            )
        if labeler not in ("active", "random"):
            raise typer.BadParameter("expected active or random", param_hint="--labeler")
        overrides: dict[str, object] = {
            "keep_running": keep_running,
            "dashboard": dashboard,
            "workers": workers,
            "seed": seed,
            "new_class": new_class,
            "labeler": labeler,
            "open_taxonomy": open_taxonomy,
            "shadow": shadow,
        }
        if rate is not None:
            overrides["rate"] = rate
        if new_class_share is not None:
            overrides["new_class_share"] = new_class_share
        if label_budget is not None:
            overrides["feedback_fraction" if labeler == "random" else "request_fraction"] = label_budget
        config = DemoConfig.preset(quick=quick, run_dir=(run_dir or default_run_dir()).resolve(), **overrides)
        console = Console()
        try:
            result = run_demo(config, console)
        except (DemoError, StackError) as exc:
            console.print(f"[bold red]demo failed[/] {exc}", highlight=False)
            raise typer.Exit(1) from exc
        except KeyboardInterrupt:
            console.print("demo interrupted; the processes it started were stopped")
            raise typer.Exit(130) from None
        if result.headline.events_labelled.get("news_topic", 0) == 0:
            raise typer.Exit(1)

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

        from driftline.apps.dashboard.server import serve
        from driftline.apps.dashboard.store import ClickHouseStore
        from driftline.settings import get_settings

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
            settings=settings,
        )
