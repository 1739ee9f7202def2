"""The analyst views' doc examples and the Grafana dashboard's queries on the local 18.16 server.

Samples, expected figures and checks come from the chDB tests (tests/unit/driftline/schema/
test_analytics.py), so the server must agree with the same independent Python calculation.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.analytics_samples import SampleSet, build_samples
from tests.unit.driftline.schema.test_analytics import (
    EXPECTED,
    ServerEngine,
    _load,
    _run_example,
    grafana_queries,
)


@pytest.fixture(scope="module")
def samples() -> SampleSet:
    return build_samples("")  # the real task names: the docs' examples filter on them


@pytest.fixture(scope="module")
def server_engine(samples: SampleSet) -> Iterator[ServerEngine]:
    from driftline.settings import get_settings

    engine = ServerEngine(get_settings())
    try:
        _load(engine, samples)
        yield engine
    finally:
        engine.close()


@pytest.mark.stack
@pytest.mark.parametrize("number", sorted(EXPECTED))
def test_doc_example_on_server(server_engine: ServerEngine, samples: SampleSet, number: int) -> None:
    _run_example(server_engine, number, samples)


@pytest.mark.stack
@pytest.mark.parametrize("title", sorted(grafana_queries()))
def test_grafana_queries_on_server(server_engine: ServerEngine, title: str) -> None:
    _, server_rows = server_engine.rows(grafana_queries()[title])
    assert server_rows, f"{title}: no rows on sample data"
    server_engine.rows(grafana_queries("news_topic")[title])
