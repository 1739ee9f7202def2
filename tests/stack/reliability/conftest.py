"""One private pipeline stack for the reliability stack tests (hostile input and faults).

Kafka, ClickHouse (password-protected user) and Triton run on free ports with a temporary run dir
and model repository, so the tests may restart or kill anything without touching the shared stack.
Package-scoped: started once for ``tests/reliability`` and stopped after its last test.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from driftline.compose.stack.manager import Stack
from driftline.settings import Settings
from tests.stack.reliability.support import PIPELINE_CH_PASSWORD, private_env, settings_for


@dataclass
class PrivatePipelineStack:
    env: dict[str, str]
    settings: Settings
    stack: Stack
    routes: dict[str, str]  # DRIFTLINE_ROUTES__<KIND> values
    log_dir: Path


async def _load(url: str, names: list[str]) -> None:
    from driftline.models.inference.triton import TritonClient

    async with TritonClient(url, timeout_s=300) as client:
        for name in names:
            await client.load(name)


@pytest.fixture(scope="package")
def pipeline_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePipelineStack]:
    from driftline.apps.testing.harness import pipeline_artifact
    from driftline.models.triton.export import export

    root = tmp_path_factory.mktemp("reliability-stack")
    repository = root / "triton_repo"
    repository.mkdir()
    env = private_env(
        root / "run",
        clickhouse_user="driftline_rw",
        clickhouse_password=PIPELINE_CH_PASSWORD,
        repository=repository,
    )
    settings = settings_for(env)
    routes = {}
    for kind, task in (("news", "news_topic"), ("chat", "chat_sentiment")):
        name = f"rel_{task}"
        export(task, pipeline_artifact(task), name=name, repository=repository)
        routes[kind] = f"{task}@{name}"
    stack = Stack(settings)
    try:
        stack.up()
        asyncio.run(_load(settings.triton.grpc_url, [r.split("@")[1] for r in routes.values()]))
        log_dir = root / "workers"
        log_dir.mkdir()
        yield PrivatePipelineStack(env, settings, stack, routes, log_dir)
    finally:
        stack.down()
        shutil.rmtree(repository, ignore_errors=True)
