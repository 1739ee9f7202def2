"""CLI commands: ``driftline worker``, ``publish``, ``replay``, ``tail``.

Topic arguments accept a ``Topics`` field name (``news``, ``chat``, ``feedback``, ``predictions``,
``alerts``, ``deadletter``) or a literal Kafka topic name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from driftline.clients import kafka_client_kwargs, kafka_producer_kwargs
from driftline.settings import Topics, get_settings

LOGLEVELS = ("debug", "info", "warning", "error")


def kafka_preflight() -> None:
    """Exit 1 with the clear reason when the broker rejects our TLS or SASL settings (else return)."""
    from driftline.clients import KafkaAuthError, check_kafka

    try:
        asyncio.run(check_kafka(get_settings()))
    except KafkaAuthError as exc:
        typer.echo(f"kafka error: {exc}", err=True)
        raise typer.Exit(1) from None
    except Exception:  # unreachable brokers: the client's own retries and errors take over
        return


def yield_cpu_to_serving() -> None:
    """Lower this process's CPU priority by ``background_nice`` (explainer, updater).

    Called first thing, before torch or asyncio start threads: Linux applies ``nice`` per thread and
    new threads inherit it. Where the kernel groups the scheduler by session
    (``kernel.sched_autogroup_enabled``, the default on desktop and many server kernels), a thread's
    nice only counts inside its session's group and the groups share the cores equally, so a
    background service in a session of its own would still take half the machine from Triton; as
    the leader of its own session (how ``driftline demo`` and the benchmarks start it) it also lowers
    its group (``/proc/self/autogroup``). Serving then wins whenever the cores are contended, and
    background work takes what is left instead of slowing every inference call. In containers the
    orchestrator's CPU shares do this job.
    """
    increment = get_settings().background_nice
    if not increment:
        return
    with contextlib.suppress(OSError):
        os.nice(increment)
    autogroup = Path("/proc/self/autogroup")
    if os.getsid(0) == os.getpid() and autogroup.exists():  # the group is this session's alone
        with contextlib.suppress(OSError):
            autogroup.write_text(str(increment), encoding="ascii")


def resolve_topic(name: str) -> str:
    """The Kafka topic for a ``Topics`` field name; any other name is taken literally."""
    topics = get_settings().kafka.topics
    return getattr(topics, name) if name in Topics.model_fields else name


def _producer_kwargs() -> dict[str, Any]:
    return kafka_producer_kwargs(get_settings(), max_request_size=32 << 20, linger_ms=5)


async def produce(
    topic: str, messages: Iterable[tuple[bytes | None, bytes]], *, rate: float | None, total: int | None
) -> int:
    """Send (key, value) pairs, optionally paced to ``rate`` messages/s, with a progress bar."""
    from aiokafka import AIOKafkaProducer
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    producer = AIOKafkaProducer(**_producer_kwargs())
    await producer.start()
    sent = 0
    started = time.perf_counter()
    try:
        columns = (TextColumn(f"[bold]{topic}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, transient=False) as progress:
            bar = progress.add_task("publish", total=total)
            pending = []
            for key, value in messages:
                if rate:
                    delay = started + sent / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                pending.append(await producer.send(topic, value=value, key=key))
                sent += 1
                if len(pending) >= 500:
                    await asyncio.gather(*pending)
                    pending.clear()
                progress.update(bar, advance=1)
            await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


def _read_lines(source: str) -> Iterator[bytes]:
    stream = sys.stdin.buffer if source == "-" else Path(source).open("rb")  # noqa: SIM115
    with stream:
        for line in stream:
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line


def _key_of(line: bytes) -> bytes | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    key = doc.get("id") or doc.get("event_id") if isinstance(doc, dict) else None
    return str(key).encode() if key else None


CHANNELS = ("general", "support", "sales", "random")


def dataset_events(
    dataset: str, *, limit: int | None, feedback_fraction: float, seed: int = 0
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """Events (and feedback for a fraction of them) from a packaged dataset; returns (kind, ...)."""
    from driftline.models.datasets import load_dataset
    from driftline.models.tasks import load_tasks
    from driftline.streams.routing import load_routes

    data = load_dataset(dataset)
    tasks = [t for t in load_tasks().values() if t.dataset == dataset]
    routes = {r.task: r for r in load_routes(get_settings())}
    task = next((t.name for t in tasks if t.name in routes), None)
    if task is None:
        raise typer.BadParameter(f"no routed task uses dataset {dataset!r}")
    kind = routes[task].schema_kind
    rng = random.Random(seed)
    examples = list(data.examples)
    rng.shuffle(examples)
    examples = examples[:limit] if limit else examples
    run = uuid.uuid4().hex[:8]
    events, feedback = [], []
    for i, example in enumerate(examples):
        now = datetime.now(UTC).isoformat()
        event_id = f"{dataset}-{run}-{i}"
        if kind == "news":
            title, _, body = example.text.partition(". ")
            event = {
                "id": event_id,
                "timestamp": now,
                "source": dataset,
                "title": title,
                "body": body,
                "language": "en",
            }
        else:
            event = {
                "id": event_id,
                "timestamp": now,
                "conversation_id": f"c{i // 5}",
                "user": f"u{i % 50}",
                "channel": rng.choice(CHANNELS),
                "text": example.text,
                "language": "zh",
            }
        events.append(event)
        if rng.random() < feedback_fraction and example.label in load_tasks()[task].labels:
            feedback.append(
                {
                    "event_id": event_id,
                    "task": task,
                    "label": example.label,
                    "source": "replay",
                    "timestamp": now,
                }
            )
    return kind, events, feedback


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""

    @app.command()
    def worker(
        web_port: int = typer.Option(None, help="Faust web port (default settings.web_port); one per worker"),
        client: str = typer.Option("triton", help="Inference client: triton | local"),
        loglevel: str = typer.Option("info", help="debug | info | warning | error"),
    ) -> None:
        """Run a pipeline worker (Faust): classify news/chat events, store labels, raise alerts."""
        import faust

        from driftline.kafka_admin import partition_counts
        from driftline.logs import JsonFormatter
        from driftline.streams.app import build_pipeline, make_client
        from driftline.streams.routing import load_routes
        from driftline.streams.topics import ensure_topics, internal_topics, pipeline_topic_names

        if loglevel not in LOGLEVELS:
            raise typer.BadParameter(f"loglevel must be one of {LOGLEVELS}")
        kafka_preflight()
        settings = get_settings()
        names = pipeline_topic_names(settings.kafka.topics, load_routes(settings))
        asyncio.run(ensure_topics(settings.kafka.bootstrap, names, settings.kafka.partitions))
        # the surge tables follow the predictions topic as it is, which may predate these settings
        predictions = settings.kafka.topics.predictions
        counts = asyncio.run(partition_counts(settings, [predictions]))
        pipeline = build_pipeline(
            make_client(client), web_port=web_port, surge_partitions=counts.get(predictions)
        )
        internal = internal_topics(pipeline.app)
        for count in {partitions for partitions, _ in internal.values()}:
            names = [name for name, (partitions, _) in internal.items() if partitions == count]
            configs = {name: internal[name][1] for name in names}
            asyncio.run(ensure_topics(settings.kafka.bootstrap, names, count, configs=configs))

        class JsonWorker(faust.Worker):
            def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
                for handler in logger.handlers:
                    handler.setFormatter(JsonFormatter())

        JsonWorker(pipeline.app, loglevel=loglevel, quiet=True).execute_from_commandline()

    @app.command()
    def publish(
        source: str = typer.Argument(..., help="JSON-lines file, or - for stdin"),
        topic: str = typer.Option(..., "--topic", "-t", help="news | chat | feedback | <topic name>"),
        rate: float = typer.Option(None, help="messages per second (default: as fast as possible)"),
    ) -> None:
        """Publish JSON lines (one event per line, sent as-is) to a topic."""
        name = resolve_topic(topic)
        lines = list(_read_lines(source)) if source != "-" else None
        messages = ((_key_of(line), line) for line in (lines or _read_lines(source)))
        sent = asyncio.run(produce(name, messages, rate=rate, total=len(lines) if lines else None))
        typer.echo(f"published {sent} messages to {name}")

    @app.command()
    def replay(
        dataset: str = typer.Argument(..., help="a packaged dataset, e.g. bbc_news"),
        rate: float = typer.Option(20.0, help="events per second"),
        feedback_fraction: float = typer.Option(0.0, min=0.0, max=1.0, help="share of events with feedback"),
        limit: int = typer.Option(None, help="at most this many events"),
        seed: int = typer.Option(0, help="shuffle seed"),
    ) -> None:
        """Stream a dataset as news/chat events (plus feedback events for a fraction)."""
        kind, events, feedback = dataset_events(
            dataset, limit=limit, feedback_fraction=feedback_fraction, seed=seed
        )
        topic = resolve_topic(kind)
        encoded = [(e["id"].encode(), json.dumps(e, ensure_ascii=False).encode()) for e in events]
        sent = asyncio.run(produce(topic, encoded, rate=rate, total=len(encoded)))
        typer.echo(f"replayed {sent} {kind} events from {dataset} to {topic}")
        if feedback:
            fb = [(f["event_id"].encode(), json.dumps(f).encode()) for f in feedback]
            n = asyncio.run(produce(resolve_topic("feedback"), fb, rate=None, total=len(fb)))
            typer.echo(f"published {n} feedback events")

    @app.command()
    def tail(
        topic: str = typer.Argument(
            ..., help="news | chat | feedback | predictions | alerts | deadletter | <name>"
        ),
        from_beginning: bool = typer.Option(False, "--from-beginning", help="start at the oldest message"),
        limit: int = typer.Option(None, help="stop after this many messages"),
        timeout: float = typer.Option(None, help="stop after this many seconds without a message"),
    ) -> None:
        """Print a topic's messages as they arrive (JSON values pretty-compact, others repr'd)."""

        async def run() -> None:
            async for value in _consume(resolve_topic(topic), from_beginning, limit, timeout):
                try:
                    typer.echo(json.dumps(json.loads(value), ensure_ascii=False))
                except ValueError:
                    typer.echo(repr(value[:500]))

        asyncio.run(run())


async def _consume(
    topic: str, from_beginning: bool, limit: int | None, timeout: float | None
) -> AsyncIterator[bytes]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        **kafka_client_kwargs(get_settings()),
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
        group_id=None,
        fetch_max_bytes=64 << 20,
        max_partition_fetch_bytes=32 << 20,
    )
    await consumer.start()
    seen = 0
    try:
        while limit is None or seen < limit:
            batch = await consumer.getmany(timeout_ms=int((timeout or 3600) * 1000))
            if not batch:
                if timeout is not None:
                    return
                continue
            for records in batch.values():
                for record in records:
                    yield record.value or b""
                    seen += 1
                    if limit is not None and seen >= limit:
                        return
    finally:
        await consumer.stop()
