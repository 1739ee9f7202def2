"""The annotator API's rules without services: who may write, what is refused, the queue's shape.

The ClickHouse store is a stand-in returning fixed rows (pure logic); publishing is covered by the
Chromium click-through (tests/stack/apps/test_annotator.py) against the real Kafka.
"""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from driftline.apps.dashboard.annotate import Annotator
from driftline.apps.dashboard.server import create_app
from driftline.settings import Settings


class _Store:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.asked: list[dict[str, Any]] = []

    async def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        self.asked.append(params or {})
        return self.rows

    def close(self) -> None:
        pass


ROW = {
    "task": "news_topic", "event_id": "e1", "text": "Shares fell", "label": "business", "confidence": 0.41,
    "label_names": ["business", "tech"], "probabilities": [0.41, 0.59], "reason": "uncertain",
    "model_version": "3", "drift_active": 1, "requested_ts_ms": 5, "tokens": ["Shares", "fell"],
    "scores": [0.5, -0.25],
}  # fmt: skip


async def _client(
    tokens: dict[str, str], rows: list[dict[str, Any]] | None = None
) -> tuple[TestClient, _Store]:
    store = _Store(rows or [])
    settings = Settings(annotator_tokens=tokens)
    client = TestClient(TestServer(create_app(store, Annotator(settings, store))))  # type: ignore[arg-type]
    await client.start_server()
    return client, store


async def test_writes_need_configured_tokens_and_a_matching_one() -> None:
    answer = {"task": "news_topic", "event_id": "e1", "label": "business"}
    client, _ = await _client({})
    try:
        response = await client.post("/api/feedback", json=answer, headers={"Authorization": "Bearer x"})
        assert response.status == 403 and "DRIFTLINE_ANNOTATOR_TOKENS" in (await response.json())["error"]
    finally:
        await client.close()
    client, _ = await _client({"ann-1": "right"})
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic right"}):
            response = await client.post("/api/feedback", json=answer, headers=headers)
            assert response.status == 401, headers
    finally:
        await client.close()


async def test_bad_answers_are_refused_before_anything_is_published() -> None:
    client, _ = await _client({"ann-1": "right"})
    auth = {"Authorization": "Bearer right"}
    try:
        cases = [
            ({"task": "no_such_task", "event_id": "e1", "label": "business"}, "unknown task"),
            ({"task": "news_topic", "event_id": "e1", "label": "cooking"}, "is not one of"),
            ({"task": "news_topic", "label": "business"}, "expected JSON"),
            ({"task": "news_topic", "event_id": "", "label": "business"}, "invalid answer"),
        ]
        for body, message in cases:
            response = await client.post("/api/feedback", json=body, headers=auth)
            assert response.status == 400 and message in (await response.json())["error"], body
        response = await client.post("/api/feedback", data=b"{not json", headers=auth)
        assert response.status == 400
    finally:
        await client.close()


async def test_queue_shape_and_filters() -> None:
    client, store = await _client({"ann-1": "right"}, [ROW])
    try:
        response = await client.get("/api/requests", params={"task": "news_topic", "limit": "5000"})
        body = await response.json()
        assert response.status == 200 and body["writable"] is True
        (request,) = body["requests"]
        assert request["words"] == [["Shares", 0.5], ["fell", -0.25]] and request["drift_active"] is True
        assert request["label_names"] == ["business", "tech"]
        assert store.asked[-1] == {"task": "news_topic", "limit": 200}  # capped
        assert (await client.get("/api/requests", params={"task": "nope"})).status == 400
        assert (await client.get("/api/requests", params={"task": "news_topic", "limit": "x"})).status == 400
        page = await client.get("/annotate")
        assert page.status == 200 and "annotate.js" in await page.text()
        assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'self' covers it
    finally:
        await client.close()
