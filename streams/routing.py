"""Which Kafka topic feeds which task, and with which event schema.

Routing is configuration, not code: ``models/tasks.yaml`` says what a task *is*; this says where its
events come from. Defaults: the news topic feeds ``news_topic`` and the chat topic feeds
``chat_sentiment``. Override per topic with ``DRIFTLINE_ROUTE_NEWS=<task>`` /
``DRIFTLINE_ROUTE_CHAT=<task>`` (``-`` disables the route; ``<task>@<model>`` serves the task from
another Triton model name, e.g. a test export), or replace the whole table
with a YAML file named by ``DRIFTLINE_ROUTES_FILE``::

    routes:
      - {topic: news, schema: news, task: news_topic}      # topic: a Topics field or a literal name
      - {topic: my.other.topic, schema: chat, task: chat_sentiment}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel

from driftline.models.tasks import get_task
from driftline.settings import Topics


class Route(BaseModel):
    topic: str  # resolved Kafka topic name
    schema_kind: Literal["news", "chat"]
    task: str
    model: str = ""  # Triton model name; "" means the task name

    @property
    def model_name(self) -> str:
        return self.model or self.task


DEFAULT_ROUTES = [("news", "news", "news_topic"), ("chat", "chat", "chat_sentiment")]


def _resolve_topic(name: str, topics: Topics) -> str:
    return getattr(topics, name) if name in Topics.model_fields else name


def load_routes(topics: Topics) -> list[Route]:
    """The routing table; every task named must be declared in tasks.yaml (fails fast otherwise)."""
    file = os.environ.get("DRIFTLINE_ROUTES_FILE")
    if file:
        raw = yaml.safe_load(Path(file).read_text(encoding="utf-8"))["routes"]
        specs = [(r["topic"], r.get("schema", r["topic"]), r["task"], r.get("model", "")) for r in raw]
    else:
        specs = []
        for topic, schema, task in DEFAULT_ROUTES:
            override = os.environ.get(f"DRIFTLINE_ROUTE_{topic.upper()}")
            if override == "-":
                continue
            name, _, model = (override or task).partition("@")
            specs.append((topic, schema, name, model))
    routes = [Route(topic=_resolve_topic(t, topics), schema_kind=s, task=k, model=m) for t, s, k, m in specs]
    for route in routes:
        get_task(route.task)  # raises UnknownTaskError naming the declared tasks
    if len({r.topic for r in routes}) != len(routes):
        raise ValueError(f"a topic is routed twice: {[r.topic for r in routes]}")
    return routes
