"""The ``driftline updater`` process loop: drift alerts and feedback in, updates out.

It consumes the alerts and feedback topics (through the one client factory, so a secured
cluster's settings reach it), feeds each task's ``UpdateTrigger`` and, when one fires, runs that
task's ``Updater.run_update`` in a worker thread so the consumer keeps polling. At start and after
each promotion it warms the updaters' feature caches (``Updater.warm``), so the head refit that
answers the next drift embeds only the new feedback.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

from driftline.clients import kafka_client_kwargs
from driftline.online.trigger import UpdateTrigger
from driftline.online.updater import UpdateOutcome, Updater
from driftline.schema.records import DriftEvent


async def run_updater(
    tasks: Sequence[str],
    updaters: dict[str, Updater],
    *,
    bootstrap: str,
    alerts_topic: str,
    feedback_topic: str,
    group_id: str = "driftline-updater",
    poll_s: float = 1.0,
    stop: asyncio.Event | None = None,
    consumer_options: dict[str, Any] | None = None,
    on_outcome: Callable[[UpdateOutcome], None] | None = None,
) -> None:
    """Consume drift alerts and feedback; run updates (in a worker thread) when a trigger fires."""
    from aiokafka import AIOKafkaConsumer

    triggers = {task: UpdateTrigger(updaters[task].config) for task in tasks}
    options: dict[str, Any] = {
        "group_id": group_id,
        "enable_auto_commit": True,
        "auto_offset_reset": "latest",  # a new updater reacts to new drift, not to history
        **(consumer_options or {}),
    }
    # through the one client factory, so a secured cluster's SASL/TLS settings reach the updater too
    consumer = AIOKafkaConsumer(
        alerts_topic, feedback_topic, **kafka_client_kwargs(bootstrap=bootstrap, **options)
    )
    await consumer.start()
    stop = stop or asyncio.Event()
    try:
        for task in tasks:  # the consumer holds its position meanwhile; feedback waits in the topic
            await _warm(updaters[task])
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=int(poll_s * 1000), max_records=1000)
            for tp, messages in batches.items():
                for message in messages:
                    try:
                        payload = json.loads(message.value)
                    except (TypeError, ValueError):
                        continue  # not ours to dead-letter: the producer's agent validates its topic
                    task = payload.get("task") if isinstance(payload, dict) else None
                    if task not in triggers:
                        continue
                    if tp.topic == feedback_topic:
                        triggers[task].on_feedback()
                    elif payload.get("kind") == "drift":
                        try:
                            triggers[task].on_drift(DriftEvent.from_alert(payload))
                        except (TypeError, ValueError) as exc:  # malformed evidence: skip it
                            updaters[task].log(f"{task}: ignored a malformed drift alert: {exc}")
            for task, trigger in triggers.items():
                reason = trigger.reason()
                if reason:
                    drift, since_ts_ms = trigger.drift, trigger.since_ts_ms
                    trigger.mark_updated()
                    outcome = await asyncio.to_thread(updaters[task].run_update, reason, since_ts_ms)
                    updaters[task].log(f"{task}: {outcome.reason}")
                    if outcome.waiting:  # too little evidence: same drift, retry with more labels
                        trigger.wait(drift, since_ts_ms, outcome.more_labels)
                    if outcome.promoted:
                        await _warm(updaters[task])
                    if on_outcome is not None:
                        on_outcome(outcome)
    finally:
        await consumer.stop()


async def _warm(updater: Updater) -> None:
    """Embed the serving version's replay and test texts ahead of the next head refit (best effort)."""
    try:
        cached = await asyncio.to_thread(updater.warm)
    except Exception as exc:  # a cold cache only makes the next update slower
        updater.log(f"{updater.task}: feature cache not warmed: {type(exc).__name__}: {exc}")
        return
    if cached:
        updater.log(f"{updater.task}: {cached} replay and test texts embedded for head refits")
