"""The live view: what the pipeline has done so far, read from ClickHouse while the demo runs.

Shows the system's state as an analyst would find it, not the demo's intentions.
"""

from __future__ import annotations

from rich.console import Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from driftline.apps.demo.options import CHAT_TASK, NEWS_TASK
from driftline.apps.demo.publisher import PublishState
from driftline.apps.demo.store import Counters


def serving_version(task: str) -> str:
    """The versions Triton serves for ``task`` ('-' for none, '?' while its config is unreadable)."""
    from driftline.models.triton.export import serving_versions

    try:
        versions = serving_versions(task)
    except Exception:  # a config being rewritten mid-swap: show nothing rather than crash
        return "?"
    return ",".join(str(v) for v in versions) or "-"


class LiveView:
    """The rich screen shown while the demo publishes: progress, pipeline counters, process health."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        self.bar = self.progress.add_task("news events published", total=1)
        self.counters = Counters()
        self.missing: set[str] = set()
        self.processes: str = ""

    def render(self, state: PublishState) -> Group:
        """The screen for the publisher's current ``state`` and the last counters read."""
        self.progress.update(
            self.bar,
            completed=state.news_sent,
            total=max(state.planned_news, state.news_sent, 1),
            description=f"news events published ({state.phase})",
        )
        c = self.counters
        table = Table(show_header=True, header_style="bold", expand=False)
        table.add_column("")
        table.add_column(NEWS_TASK, justify="right")
        table.add_column(CHAT_TASK, justify="right")
        table.add_row("published (Kafka)", *(str(state.published.get(t, 0)) for t in (NEWS_TASK, CHAT_TASK)))
        table.add_row("labelled (ClickHouse)", *(str(c.labels.get(t, 0)) for t in (NEWS_TASK, CHAT_TASK)))
        table.add_row("drift detections", *(str(c.drift.get(t, 0)) for t in (NEWS_TASK, CHAT_TASK)))
        table.add_row("serving version (Triton)", *(serving_version(t) for t in (NEWS_TASK, CHAT_TASK)))
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(c.alerts.items()))
        summary = Table.grid(padding=(0, 2))
        summary.add_row(
            f"feedback sent {state.feedback_sent}",
            f"joined {c.feedback_joined}",
            f"alerts {sum(c.alerts.values())} ({kinds or '-'})",
            f"model versions {c.versions}",
            f"dead letters {c.dead_letters}",
        )
        parts: list = [self.progress, table, summary]
        if state.waiting_for_decision_s or state.phase == "waiting for the updater":
            parts.append("[yellow]publisher paused: waiting for the updater's decision[/]")
        if self.missing:
            parts.append(f"[red]missing tables: {', '.join(sorted(self.missing))}[/]")
        if self.processes:
            parts.append(self.processes)
        return Group(*parts)
