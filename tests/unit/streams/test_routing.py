"""Routes from the environment (streams.routing): topic to task@model, ``-`` turns a route off, and an
unknown task fails.
"""

from __future__ import annotations

import pytest

from driftline.settings import Settings
from driftline.streams.routing import load_routes


def test_routes_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_ROUTES__NEWS", "news_topic@test_model_x")
    monkeypatch.setenv("DRIFTLINE_ROUTES__CHAT", "-")
    routes = load_routes(Settings())
    assert [(r.topic, r.task, r.model_name) for r in routes] == [
        ("driftline.news.events", "news_topic", "test_model_x")
    ]
    monkeypatch.setenv("DRIFTLINE_ROUTES__NEWS", "no_such_task")
    with pytest.raises(KeyError):
        load_routes(Settings())
