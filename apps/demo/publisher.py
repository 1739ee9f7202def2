"""Paced publishing of the demo's events and their delayed feedback to Kafka.

Owns the phases (``pre``, ``post``, ``after``) and the labeler (``random`` sample or ``active`` answers to
the workers' label requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftline.apps.demo.options import DemoConfig
from driftline.apps.demo.stream import DemoEvent, StreamBuilder, feedback_payload
from driftline.settings import get_settings


@dataclass
class PublishState:
    """What has been sent so far (read by the live view)."""

    phase: str = "starting"
    published: dict[str, int] = field(default_factory=dict)
    feedback_sent: int = 0
    requests_answered: int = 0  # active labeler: label requests of this run answered
    planned_news: int = 0
    news_sent: int = 0
    waiting_for_decision_s: float = 0.0
    shift_ts_ms: int = 0  # when the first shifted event was published
    decision_seen_ts_ms: int = 0
    done: bool = False


class DemoPublisher:
    """Publishes the run's events in phases at ``config.rate`` and their feedback after a delay."""

    def __init__(
        self,
        config: DemoConfig,
        builder: StreamBuilder,
        truth_file: Path,
        decided: Callable[[int | None], Awaitable[bool]],
    ) -> None:
        """``decided(paused_since_ms)``: whether the story can go on to the "after" phase - a new
        version serves or the updater failed; once the publisher pauses (``paused_since_ms`` set),
        also a rejection with no update still training (no new labels come during the pause)."""
        self.config = config
        self.builder = builder
        self.truth_file = truth_file
        self.decided = decided
        self.state = PublishState(planned_news=config.news_pre + config.news_post_min + config.news_after)
        self.events: list[DemoEvent] = []
        self._feedback: list[tuple[float, int, DemoEvent]] = []
        self._started = 0.0
        self._sent_total = 0
        topics = get_settings().kafka.topics
        self.topic_of = {"news": topics.news, "chat": topics.chat}
        self.feedback_topic = topics.feedback
        self.requests_topic = topics.label_requests
        self._by_id: dict[str, DemoEvent] = {}
        self._scheduled = 0

    async def _pace(self) -> None:
        delay = self._started + self._sent_total / self.config.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _send(self, producer: Any, event: DemoEvent, payload: dict[str, Any], truth: Any) -> None:
        await self._pace()
        await self._flush_feedback(producer)
        value = json.dumps(payload, ensure_ascii=False).encode()
        await producer.send(self.topic_of[event.kind], value=value, key=event.event_id.encode())
        event.published_ts_ms = int(time.time() * 1000)
        self._sent_total += 1
        self.state.published[event.task] = self.state.published.get(event.task, 0) + 1
        self.events.append(event)
        self._by_id[event.event_id] = event
        truth.write(json.dumps(event.truth_row(), ensure_ascii=False) + "\n")
        if event.feedback:
            self._due(event)

    def _due(self, event: DemoEvent) -> None:
        """Schedule the event's label ``feedback_delay_s`` from now."""
        self._scheduled += 1  # tie-breaker: first scheduled, first sent
        heapq.heappush(
            self._feedback, (time.monotonic() + self.config.feedback_delay_s, self._scheduled, event)
        )

    async def _answer_requests(self, ready: asyncio.Event) -> None:
        """The simulated annotator: every label request for an event of this run gets its truth."""
        from driftline.clients import kafka_consumer

        consumer = kafka_consumer(
            self.requests_topic, settings=get_settings(), group_id=None, auto_offset_reset="latest"
        )
        await consumer.start()
        try:
            await consumer.seek_to_end()
            ready.set()
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for message in (m for messages in batches.values() for m in messages):
                    try:
                        event_id = json.loads(message.value)["event_id"]
                    except (ValueError, KeyError, TypeError):
                        continue
                    event = self._by_id.get(event_id)
                    if event is not None and not event.feedback:
                        event.feedback = True
                        self.state.requests_answered += 1
                        self._due(event)
        finally:
            await consumer.stop()

    async def _flush_feedback(self, producer: Any, everything: bool = False) -> None:
        now = time.monotonic()
        while self._feedback and (everything or self._feedback[0][0] <= now):
            due, _, event = heapq.heappop(self._feedback)
            if everything and due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            value = json.dumps(feedback_payload(event)).encode()
            event.feedback_ts_ms = int(time.time() * 1000)
            await producer.send(self.feedback_topic, value=value, key=event.event_id.encode())
            self.state.feedback_sent += 1

    async def _news_step(self, producer: Any, phase: str, truth: Any) -> None:
        event, payload = self.builder.next_news(phase)
        await self._send(producer, event, payload, truth)
        if phase == "post" and not self.state.shift_ts_ms:
            self.state.shift_ts_ms = event.published_ts_ms
        self.state.news_sent += 1
        for _ in range(self.builder.chat_due()):
            chat, chat_payload = self.builder.next_chat(phase)
            await self._send(producer, chat, chat_payload, truth)

    async def run(self) -> PublishState:
        """Publish every phase, then the remaining feedback; returns the final state."""
        from driftline.clients import kafka_producer

        producer = kafka_producer(get_settings(), linger_ms=5)
        await producer.start()
        annotator = None
        if self.config.labeler == "active":
            ready = asyncio.Event()
            annotator = asyncio.create_task(self._answer_requests(ready))
            await asyncio.wait(
                [annotator, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED
            )
            if annotator.done():
                annotator.result()  # raises why the annotator could not start
        self._started = time.perf_counter()
        cfg = self.config
        try:
            with self.truth_file.open("a", encoding="utf-8") as truth:
                self.state.phase = "pre"
                for _ in range(cfg.news_pre):
                    await self._news_step(producer, "pre", truth)
                self.state.phase = "post"
                decided, last_check, sent_post = False, 0.0, 0
                while sent_post < cfg.news_post_max:
                    if sent_post >= cfg.news_post_min and time.monotonic() - last_check >= 2.0:
                        last_check = time.monotonic()
                        decided = await self.decided(None)
                        if decided:
                            break
                    await self._news_step(producer, "post", truth)
                    sent_post += 1
                    self.state.planned_news = (
                        cfg.news_pre + max(sent_post + 1, cfg.news_post_min) + cfg.news_after
                    )
                if not decided:
                    self.state.phase = "waiting for the updater"
                    waited = time.monotonic()
                    paused_since_ms = int(time.time() * 1000)
                    while time.monotonic() - waited < cfg.decision_timeout_s:
                        await self._flush_feedback(producer)
                        if await self.decided(paused_since_ms):
                            decided = True
                            break
                        await asyncio.sleep(2.0)
                    self.state.waiting_for_decision_s = round(time.monotonic() - waited, 1)
                    self._started = (
                        time.perf_counter() - self._sent_total / cfg.rate
                    )  # no burst after a pause
                if decided:
                    self.state.decision_seen_ts_ms = int(time.time() * 1000)
                self.state.phase = "after"
                self.state.planned_news = self.state.news_sent + cfg.news_after
                for _ in range(cfg.news_after):
                    await self._news_step(producer, "after", truth)
                self.state.phase = "feedback"
                if annotator is not None:
                    await asyncio.sleep(cfg.feedback_delay_s + 2.0)  # requests of the last events
                await self._flush_feedback(producer, everything=True)
                await producer.flush()
        finally:
            if annotator is not None:
                annotator.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await annotator
            await producer.stop()
        if annotator is not None:  # the truth file says which events were labelled in the end
            rows = (json.dumps(e.truth_row(), ensure_ascii=False) + "\n" for e in self.events)
            self.truth_file.write_text("".join(rows), encoding="utf-8")
        self.state.phase = "published"
        self.state.done = True
        return self.state
