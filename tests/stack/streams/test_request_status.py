"""Label-request status passes (streams.learning.request_status) on the local ClickHouse 18.16 server.

Runs the story of tests/unit/streams/learning/test_request_status.py against the real server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.unit.streams.learning.test_request_status import _story


@pytest.fixture
def server_client() -> Iterator[Any]:
    from driftline.settings import get_settings
    from tests.conftest import migrated_database

    with migrated_database(get_settings(), "request_status_") as client:
        yield client


@pytest.mark.stack
def test_status_passes_on_the_server(server_client: Any) -> None:
    _story(server_client)
