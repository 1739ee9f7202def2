"""``run_demo``: the whole learning loop on the local stack, from nothing to a report.

Stack up, adapters served, processes started, events published, report written; a failure stops what this
run started.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from driftline.apps.demo.options import CHAT_TASK, NEWS_TASK, DemoConfig
from driftline.apps.demo.report import Headline, _fmt, decision_of, write_report
from driftline.settings import get_settings


class DemoError(RuntimeError):
    """The demo cannot go on (a process died, the stack is not reachable); the message says why."""


@dataclass
class DemoResult:
    """What a demo run leaves: its folder, the headline, the dashboard URL and any missing tables."""

    run_dir: Path
    headline: Headline
    dashboard_url: str | None
    missing: list[str] = field(default_factory=list)


def default_run_dir() -> Path:
    """A fresh ``<run_dir>/demo/<UTC timestamp>`` folder path (not created)."""
    return get_settings().run_dir / "demo" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _wait_healthy(port: int, managed: Any, timeout_s: float) -> None:
    """Until the worker's /health says ok (partitions assigned, Triton ready, sinks healthy)."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if not managed.alive():
            raise DemoError(f"{managed.name} exited with {managed.process.returncode}:\n{managed.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as response:
                if json.loads(response.read()).get("ok"):
                    return
        except urllib.error.HTTPError as exc:  # 503 with the failing checks
            last = exc.read().decode(errors="replace")[:300]
        except (OSError, ValueError) as exc:
            last = str(exc)
        time.sleep(1.0)
    raise DemoError(f"{managed.name} not healthy after {timeout_s:.0f}s: {last}\n{managed.tail()}")


def run_demo(config: DemoConfig, console: Console | None = None) -> DemoResult:
    """Run the whole demo (steps in the module docstring); stops what it started on failure."""
    from driftline.apps.demo.live import LiveView
    from driftline.apps.demo.models import prepare_models
    from driftline.apps.demo.processes import ProcessGroup, free_port, port_in_use
    from driftline.apps.demo.publisher import DemoPublisher
    from driftline.apps.demo.store import DemoStore
    from driftline.apps.demo.stream import StreamBuilder
    from driftline.compose.stack.manager import Stack

    console = console or Console()
    if config.open_taxonomy:  # before anything reads the tasks: this process and its children
        config.run_dir.mkdir(parents=True, exist_ok=True)
        os.environ["DRIFTLINE_TASKS_FILE"] = str(config.write_tasks_file())
        get_settings.cache_clear()
    log = lambda message: console.print(f"[dim]{datetime.now():%H:%M:%S}[/] {message}", highlight=False)  # noqa: E731
    settings = get_settings()
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(config.model_dump_json(indent=2), encoding="utf-8")
    run_id = f"{datetime.now(UTC):%Y%m%d%H%M%S}{uuid.uuid4().hex[:4]}"
    started = time.time()
    timings: dict[str, float] = {}

    log(f"run {run_id}, folder {run_dir}")
    t = time.monotonic()
    up = Stack().up(report=lambda m: log(f"stack: {m}"))
    timings["stack_up_s"] = round(time.monotonic() - t, 1)
    log(f"stack ready (started: {', '.join(up.started) or 'none'})")

    t = time.monotonic()
    served = prepare_models(config, log)
    timings["models_s"] = round(time.monotonic() - t, 1)

    online_file = config.write_online_config(since_ts_ms=int(started * 1000))
    env = dict(os.environ, DRIFTLINE_ONLINE_FILE=str(online_file), PYTHONUNBUFFERED="1")
    # the explainer shares the CPU with Triton and the workers: one torch thread unless told otherwise
    env.setdefault("DRIFTLINE_EXPLAINER__TORCH_THREADS", "1")
    group = ProcessGroup(run_dir / "logs", env)
    # the updater's feature cache (replay and test texts per encoder, on disk): filled before the
    # stream, so the first drift's head refit embeds only its new labels (instant when cached)
    t = time.monotonic()
    code = group.run(
        "warm", "updater", "--task", NEWS_TASK, "--task", CHAT_TASK, "--warm-only", timeout_s=600
    )
    timings["warm_s"] = round(time.monotonic() - t, 1)
    if code != 0:
        log(f"feature cache warm-up failed ({code}; logs/warm.log): the updater warms while streaming")
    started_ms = int(time.time() * 1000)
    store = DemoStore(settings.clickhouse, run_id, started_ms)
    dashboard_url = None
    try:
        t = time.monotonic()
        ports = []
        for n in range(config.workers):
            port = free_port()
            ports.append(port)
            group.start(f"worker-{n + 1}", "worker", "--web-port", str(port))
        group.start(
            "updater",
            "updater",
            "--task",
            NEWS_TASK,
            "--task",
            CHAT_TASK,
            "--group-id",
            f"driftline-demo-{run_id}",
        )
        group.start("explainer", "explainer", "--group-id", f"driftline-demo-{run_id}-explainer")
        if config.dashboard:
            dashboard_url = _start_dashboard(group, settings, run_dir, log, port_in_use)
        for n, port in enumerate(ports):
            _wait_healthy(port, group.processes[n], timeout_s=240)
        timings["processes_s"] = round(time.monotonic() - t, 1)
        log(f"{config.workers} worker(s) healthy; updater and explainer running (logs in {group.log_dir})")

        builder = StreamBuilder(config, run_id, served[NEWS_TASK].train_ids, served[CHAT_TASK].train_ids)
        initial = str(served[NEWS_TASK].version)

        async def decided(paused_since_ms: int | None) -> bool:
            # A rejection alone does not end the shifted phase: more labels arrive and the updater
            # tries again. Once the publisher pauses no new labels come, so then a rejection ends the
            # wait - unless an update is still training (its "update started" alert is the newest).
            # A "wait for evidence" does not: labels still in flight (feedback_delay_s) may be the
            # ones the gate waits for; decision_timeout_s bounds that wait.
            versions = await asyncio.to_thread(store.versions)
            first = decision_of(versions, initial)
            if first is not None and first.promoted:
                return True
            alerts = [a for a in await asyncio.to_thread(store.model_alerts) if a[0] == NEWS_TASK]
            if any("failed" in subject for _, _, _, subject, _ in alerts):
                return True
            training = bool(alerts) and alerts[-1][3].endswith("update started")
            return bool(paused_since_ms) and first is not None and not training

        publisher = DemoPublisher(config, builder, run_dir / "events.jsonl", decided)
        view = LiveView()
        t = time.monotonic()
        asyncio.run(_publish_live(publisher, view, store, group, console, config))
        timings["stream_s"] = round(time.monotonic() - t, 1)
        log(
            f"published {sum(publisher.state.published.values())} events, "
            f"{publisher.state.feedback_sent} feedback ({config.labeler} labelling"
            + (
                f", {publisher.state.requests_answered} requests answered)"
                if config.labeler == "active"
                else ")"
            )
        )
    finally:
        if config.keep_running:
            pids = [p.pid for p in group.processes]
            log(f"--keep-running: workers, updater and explainer stay up (pids {pids})")
        else:
            codes = group.stop_all()
            log(f"stopped {', '.join(f'{k} ({v})' for k, v in codes.items())}")

    t = time.monotonic()
    missing = sorted(f"ClickHouse table `{m}` does not exist" for m in store.missing)
    labels = store.labels()
    drift = store.drift_events() or store.drift_alerts()
    if not drift:
        missing.append("no drift detection recorded (drift_events table / drift alerts) during the run")
    versions = store.versions()
    joined = store.joined_feedback()
    if not joined:
        missing.append("no feedback joined by the pipeline (`feedback` table empty for this run)")
    context = {
        "run_id": run_id,
        "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "duration_s": time.time() - started,
        "quick": config.quick,
        "missing": missing,
        "details": {
            "initial adapters": "; ".join(
                f"{s.task} v{s.version} {s.adapter_hash} ({'cached' if s.reused_training else 'trained'}, "
                f"test accuracy {_fmt(s.test_accuracy)}"
                + (
                    f" on the declared classes, {config.new_class} "
                    + ("not declared" if config.open_taxonomy else "never trained")
                    if s.task == NEWS_TASK
                    else ""
                )
                + ")"
                for s in served.values()
            ),
            "timings": ", ".join(f"{k} {v}" for k, v in timings.items()),
            "publisher paused for the decision": f"{publisher.state.waiting_for_decision_s} s",
            "texts sent twice (pools exhausted)": builder.repeated_texts,
            "online config": str(online_file),
            "dashboard": dashboard_url or "not started",
        },
    }
    headline = write_report(
        run_dir,
        publisher.events,
        labels,
        drift,
        versions,
        initial_version=initial,
        feedback_joined=len(joined),
        window=20 if config.quick else 40,
        context=context,
        new_class=config.new_class,
        labeler=config.labeler,
        open_taxonomy=config.open_taxonomy,
        update_starts_ms=[
            ts
            for task, _, ts, subject, _ in store.model_alerts()
            if task == NEWS_TASK and subject.endswith("update started")
        ],
    )
    store.close()
    timings["report_s"] = round(time.monotonic() - t, 1)
    _print_headline(console, headline, run_dir, dashboard_url, missing)
    return DemoResult(run_dir, headline, dashboard_url, missing)


def _start_dashboard(group: Any, settings: Any, run_dir: Path, log: Any, port_in_use: Any) -> str | None:
    """The dashboard outlives the demo (like the stack); an already running one is reused."""
    import importlib.util

    url = f"http://{settings.web_host}:{settings.dashboard_port}/"
    if port_in_use(settings.web_host, settings.dashboard_port):
        log(f"dashboard: something already listens on {url}; reusing it")
        return url
    if importlib.util.find_spec("driftline.apps.dashboard.server") is None:
        log("dashboard: not available (driftline.apps.dashboard.server missing)")
        return None
    managed = group.start("dashboard", "dashboard", detach=True)
    (run_dir / "dashboard.pid").write_text(str(managed.pid), encoding="utf-8")
    log(f"dashboard: {url} (pid {managed.pid}; stop it with `kill {managed.pid}`)")
    return url


async def _publish_live(
    publisher: Any, view: Any, store: Any, group: Any, console: Console, config: DemoConfig
) -> None:
    """Publish under the live view; then wait until everything published has been labelled."""
    stop = asyncio.Event()

    async def refresh(live: Live) -> None:
        while not stop.is_set():
            try:
                view.counters = await asyncio.to_thread(store.counters)
                view.missing = set(store.missing)
            except Exception as exc:  # a slow ClickHouse must not end the demo
                view.processes = f"[red]ClickHouse read failed: {exc}[/]"
            dead = group.dead()
            if dead:
                view.processes = "[red]exited: " + ", ".join(f"{p.name} ({p.log})" for p in dead) + "[/]"
            live.update(view.render(publisher.state))
            await asyncio.sleep(1.0)

    with Live(view.render(publisher.state), console=console, refresh_per_second=4) as live:
        refresher = asyncio.create_task(refresh(live))
        try:
            state = await publisher.run()
            publisher.state.phase = "waiting for labels"
            deadline = time.monotonic() + config.drain_timeout_s
            while time.monotonic() < deadline:
                counts = view.counters.labels
                if all(counts.get(t, 0) >= n for t, n in state.published.items()):
                    break
                if group.dead():
                    break
                await asyncio.sleep(1.0)
            await asyncio.sleep(3.0)  # the last feedback joins and detections land
            publisher.state.phase = "done"
        finally:
            stop.set()
            await refresher
            live.update(view.render(publisher.state))
    dead = group.dead()
    if dead:
        details = "\n".join(f"--- {p.name} ---\n{p.tail()}" for p in dead)
        raise DemoError(f"process(es) exited during the demo:\n{details}")


def _print_headline(
    console: Console, h: Headline, run_dir: Path, dashboard: str | None, missing: list[str]
) -> None:
    from rich.table import Table

    table = Table(
        title=f"driftline demo: headline (news_topic, emerging class {h.new_class}, {h.labeler} labelling)"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("pre-shift accuracy", _fmt(h.pre_shift_accuracy))
    table.add_row(f"accuracy at the drop (n={h.drop_events})", _fmt(h.drop_accuracy))
    table.add_row(
        "detection delay",
        "not detected"
        if h.detection_delay_events is None
        else f"{h.detection_delay_events} events ({h.first_detector})",
    )
    table.add_row("decision", f"{h.decision or 'none'} {h.promoted_version}".strip())
    table.add_row(f"recovered accuracy (n={h.recovered_events})", _fmt(h.recovered_accuracy))
    table.add_row("recovery ratio", _fmt(h.recovery_ratio, pct=False))
    table.add_row(
        f"{h.new_class} accuracy before -> after",
        f"{_fmt(h.new_class_accuracy_before)} -> {_fmt(h.new_class_accuracy_after)}",
    )
    console.print(table)
    console.print(f"report: [bold]{run_dir / 'report.md'}[/] (plots beside it)", highlight=False)
    if dashboard:
        console.print(f"dashboard: [bold]{dashboard}[/]", highlight=False)
    for line in missing:
        console.print(f"[yellow]missing:[/] {line}", highlight=False)
    console.print("the stack keeps running; `driftline stack down` stops it", highlight=False)
