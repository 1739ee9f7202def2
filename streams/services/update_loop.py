"""The ``driftline updater`` process loop: drift alerts and feedback in, updates out.

``run_updater`` feeds each task's ``UpdateTrigger``, runs updates in a thread, and periodically watches
promotions, judges shadows and warms feature caches.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from driftline.clients import kafka_client_kwargs
from driftline.online.gates.promotion import Decision
from driftline.online.update.trigger import UpdateTrigger
from driftline.online.update.updater import UpdateOutcome, Updater
from driftline.schema.records import DriftEvent

WARM_STEP = 32  # texts embedded per warm-up step (about a second on two busy cores)


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
    on_decision: Callable[[str, Decision], None] | None = None,
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
        cold = set(tasks)  # feature caches still warming (a step per poll)
        next_watch = dict.fromkeys(tasks, 0.0)
        next_shadow = dict.fromkeys(tasks, 0.0)
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
                            event = DriftEvent.from_alert(payload)
                        except (TypeError, ValueError) as exc:  # malformed evidence: skip it
                            updaters[task].log(f"{task}: ignored a malformed drift alert: {exc}")
                            continue
                        if updaters[task].about_serving(event.model_version):
                            triggers[task].on_drift(event)
            for task, trigger in triggers.items():
                reason = trigger.reason()
                if reason:
                    drift, since_ts_ms = trigger.drift, trigger.since_ts_ms
                    trigger.mark_updated()
                    outcome = await asyncio.to_thread(updaters[task].run_update, reason, since_ts_ms)
                    updaters[task].log(f"{task}: {outcome.reason}")
                    if outcome.waiting:  # too little evidence: same drift, retry with more labels
                        trigger.wait(drift, since_ts_ms, outcome.more_labels, outcome.fresh_labels)
                    if outcome.promoted:
                        cold.add(task)  # a new version: its encoder's features, from now on
                    if on_outcome is not None:
                        on_outcome(outcome)
            for task in tasks:  # the serving versions' live feedback against their predecessors
                if time.monotonic() >= next_watch[task]:
                    next_watch[task] = time.monotonic() + updaters[task].rollback_config.check_every_s
                    if await _watch(updaters[task]):
                        cold.add(task)  # rolled back: the earlier version's features
                if updaters[task].shadowing and time.monotonic() >= next_shadow[task]:
                    next_shadow[task] = time.monotonic() + updaters[task].shadow_config.check_every_s
                    if await _check_shadow(updaters[task], on_decision):
                        cold.add(task)  # the shadow serves now
            for task in sorted(cold):
                if not await _warm(updaters[task]):
                    cold.discard(task)
                break  # one step per poll
    finally:
        await consumer.stop()


async def _check_shadow(updater: Updater, on_decision: Callable[[str, Decision], None] | None) -> bool:
    """One look at the pending shadow's evidence (``Updater.check_shadow``); True if it now serves."""
    try:
        decision = await asyncio.to_thread(updater.check_shadow)
    except Exception as exc:  # the next look tries again
        updater.log(f"{updater.task}: shadow check failed: {type(exc).__name__}: {exc}")
        return False
    if decision is None or decision.wait:
        return False
    updater.log(f"{updater.task}: {decision.reason}")
    if on_decision is not None:
        on_decision(updater.task, decision)
    return decision.promote


async def _watch(updater: Updater) -> bool:
    """One look at the serving version's live feedback (``Updater.watch_promotion``); True if rolled back."""
    try:
        verdict = await asyncio.to_thread(updater.watch_promotion)
    except Exception as exc:  # the watch must not stop the updater; the next look tries again
        updater.log(f"{updater.task}: promotion watch failed: {type(exc).__name__}: {exc}")
        return False
    return verdict is not None and verdict.decision == "rollback"


async def _warm(updater: Updater, step: int = WARM_STEP) -> int:
    """One warm-up step of ``updater``'s feature cache; how many texts remain (0: warm or failed)."""
    try:
        left = await asyncio.to_thread(updater.warm, step)
    except Exception as exc:  # a cold cache only makes the next update slower
        updater.log(f"{updater.task}: feature cache not warmed: {type(exc).__name__}: {exc}")
        return 0
    if not left and len(updater.features):
        updater.log(f"{updater.task}: {len(updater.features)} replay and test texts embedded for head refits")
    return left
