"""Which Kafka topic feeds which task, and with which event schema.

Routing is configuration from the settings (``DRIFTLINE_ROUTES__*`` or a ``DRIFTLINE_ROUTES_FILE`` table).
"""

from __future__ import annotations

from typing import Literal

import yaml
from pydantic import BaseModel

from driftline.models.tasks import get_task
from driftline.settings import RouteSettings, Settings, Topics


class Route(BaseModel):
    """One input topic: the task it feeds and the Triton model serving it."""

    topic: str  # resolved Kafka topic name
    schema_kind: Literal["news", "chat"]
    task: str
    model: str = ""  # Triton model name; "" means the task name

    @property
    def model_name(self) -> str:
        """The Triton model to call."""
        return self.model or self.task


#: topic (a ``RouteSettings`` field) -> event schema of the default table
DEFAULT_SCHEMAS = {"news": "news", "chat": "chat"}


def _resolve_topic(name: str, topics: Topics) -> str:
    return getattr(topics, name) if name in Topics.model_fields else name


def load_routes(settings: Settings) -> list[Route]:
    """The routing table; every task named must be declared in tasks.yaml (fails fast otherwise)."""
    topics = settings.kafka.topics
    if settings.routes_file:
        raw = yaml.safe_load(settings.routes_file.read_text(encoding="utf-8"))["routes"]
        specs = [(r["topic"], r.get("schema", r["topic"]), r["task"], r.get("model", "")) for r in raw]
    else:
        specs = []
        for topic in RouteSettings.model_fields:
            value = getattr(settings.routes, topic)
            if value == "-":
                continue
            name, _, model = value.partition("@")
            specs.append((topic, DEFAULT_SCHEMAS[topic], name, model))
    routes = [Route(topic=_resolve_topic(t, topics), schema_kind=s, task=k, model=m) for t, s, k, m in specs]
    for route in routes:
        get_task(route.task)  # raises UnknownTaskError naming the declared tasks
    if len({r.topic for r in routes}) != len(routes):
        raise ValueError(f"a topic is routed twice: {[r.topic for r in routes]}")
    return routes
