"""The annotator page's API: open label requests to read, answers to publish as feedback.

``GET /api/requests`` lists open requests with their explanations; ``POST /api/feedback`` publishes feedback
and needs a configured bearer token (else 403).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from driftline.apps.dashboard.store import ClickHouseStore
from driftline.models.tasks import UnknownTaskError, get_task
from driftline.schema.events import FeedbackEvent
from driftline.settings import Settings

log = logging.getLogger("driftline.dashboard.annotate")

MAX_QUEUE = 200
MAX_BODY_BYTES = 16 << 10

QUEUE_SQL = """
SELECT task, event_id, text, label, confidence, label_names, probabilities, reason, model_version,
       drift_active, requested_ts_ms, tokens, scores
FROM label_requests AS r FINAL
LEFT JOIN
(
    SELECT task, event_id, model_version, tokens, scores FROM explanations FINAL WHERE task = %(task)s
) AS e USING (task, event_id, model_version)
WHERE task = %(task)s AND status = 'requested'
ORDER BY drift_active DESC, requested_ts_ms
LIMIT %(limit)s
"""


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class Annotator:
    """The two routes over a ClickHouse store (reads) and a lazily started Kafka producer (writes)."""

    def __init__(self, settings: Settings, store: ClickHouseStore) -> None:
        self.settings = settings
        self.store = store
        self.topic = settings.kafka.topics.feedback
        self._tokens = {name: secret.get_secret_value() for name, secret in settings.annotator_tokens.items()}
        self._producer: Any = None

    def annotator(self, request: web.Request) -> str | None:
        """The annotator id whose token the request carries, or None."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        found = None
        for name, secret in self._tokens.items():
            if hmac.compare_digest(token.encode(), secret.encode()):
                found = name
        return found

    async def queue(self, request: web.Request) -> web.Response:
        """``GET /api/requests``: the task's open requests with their explanations."""
        task = request.query.get("task", "")
        try:
            limit = min(MAX_QUEUE, max(1, int(request.query.get("limit", "50"))))
        except ValueError:
            return _error(400, "limit must be an integer")
        try:
            get_task(task)
        except UnknownTaskError:
            return _error(400, f"unknown task {task!r}")
        rows = await self.store.query(QUEUE_SQL, {"task": task, "limit": limit})
        requests = [
            {
                "task": r["task"],
                "event_id": r["event_id"],
                "text": r["text"],
                "label": r["label"],
                "confidence": round(float(r["confidence"]), 4),
                "label_names": list(r["label_names"]),
                "probabilities": [round(float(p), 4) for p in r["probabilities"]],
                "reason": r["reason"],
                "model_version": r["model_version"],
                "drift_active": bool(r["drift_active"]),
                "requested_ts_ms": int(r["requested_ts_ms"]),
                "words": [[t, round(float(s), 4)] for t, s in zip(r["tokens"], r["scores"], strict=False)],
            }
            for r in rows
        ]
        return web.json_response({"task": task, "writable": bool(self._tokens), "requests": requests})

    async def answer(self, request: web.Request) -> web.Response:
        """``POST /api/feedback``: one answer, published on the feedback topic."""
        if not self._tokens:
            return _error(
                403, "answers are disabled: no annotator tokens configured (DRIFTLINE_ANNOTATOR_TOKENS)"
            )
        annotator = self.annotator(request)
        if annotator is None:
            return _error(401, "a valid annotator token is required (Authorization: Bearer <token>)")
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _error(413, "answer too large")
        try:
            body = json.loads(await request.text())
            task, event_id, label = str(body["task"]), str(body["event_id"]), str(body["label"])
        except (ValueError, KeyError, TypeError):
            return _error(400, 'expected JSON {"task": ..., "event_id": ..., "label": ...}')
        try:
            labels = get_task(task).labels
        except UnknownTaskError:
            return _error(400, f"unknown task {task!r}")
        if label not in labels:
            return _error(400, f"label {label!r} is not one of {task}'s labels {labels}")
        doc = {
            "event_id": event_id,
            "task": task,
            "label": label,
            "source": f"annotator:{annotator}",
            "timestamp": time.time(),
        }
        try:
            FeedbackEvent.model_validate(doc)
        except ValidationError as exc:
            return _error(400, f"invalid answer: {exc.errors()[0]['msg']}")
        try:
            producer = await self._ensure_producer()
            await producer.send_and_wait(self.topic, json.dumps(doc).encode(), key=event_id.encode())
        except Exception as exc:
            log.warning("feedback not published: %s", type(exc).__name__)
            return _error(503, f"the feedback topic is unreachable ({type(exc).__name__}); try again")
        log.info("answer published task=%s event_id=%s annotator=%s", task, event_id, annotator)
        return web.json_response({"ok": True, "annotator": annotator, "event_id": event_id}, status=202)

    async def _ensure_producer(self) -> Any:
        if self._producer is None:
            from driftline.clients import kafka_producer

            producer = kafka_producer(self.settings, request_timeout_ms=10_000)
            await producer.start()
            self._producer = producer
        return self._producer

    async def close(self, app: web.Application | None = None) -> None:
        """Stop the producer (app cleanup)."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def add_routes(self, app: web.Application) -> None:
        """Register the two API routes and the cleanup."""
        app.router.add_get("/api/requests", self.queue)
        app.router.add_post("/api/feedback", self.answer)
        app.on_cleanup.append(self.close)
