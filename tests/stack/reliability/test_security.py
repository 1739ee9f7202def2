"""Security on a private stack: SASL/SCRAM Kafka, a password-protected ClickHouse user, no leaked secrets.

The stack is started through the real CLI (``driftline stack up``) on free ports with a temporary
run dir and recognisable secrets in its environment, so the same run proves that (a) every stack
client authenticates with the settings' credentials, (b) a wrong password fails at once with a
message naming the env vars to check and (c) neither secret reaches a log file or captured output.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.apps.testing.harness import free_ports
from driftline.clients import (
    ClickHouseAuthError,
    KafkaAuthError,
    check_clickhouse,
    check_kafka,
    clickhouse_client,
    kafka_client_kwargs,
)
from driftline.compose.stack.manager import Stack
from driftline.compose.stack.smoke import _kafka_round_trip
from driftline.settings import REPO_ROOT
from tests.stack.reliability.support import (
    files_containing,
    log_files,
    private_env,
    settings_for,
)

pytestmark = pytest.mark.slow

CH_SECRET = "chPw-Zebra-7f3a91"
KAFKA_SECRET = "kfPw-Quokka-2c88d0"
CLI = [sys.executable, "-m", "driftline.apps.cli"]


def _cli(env: dict[str, str], *args: str, out: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*CLI, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    with out.open("a") as fh:  # captured output is scanned for secrets at the end
        fh.write(f"$ driftline {' '.join(args)}\n{result.stdout}{result.stderr}\n")
    return result


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Path]]:
    root = tmp_path_factory.mktemp("secured")
    env = private_env(
        root / "run",
        clickhouse_user="driftline_rw",
        clickhouse_password=CH_SECRET,
        sasl=("driftline", KAFKA_SECRET),
    )
    captured = root / "captured.out"
    try:
        up = _cli(env, "stack", "up", "-s", "kafka", "-s", "clickhouse", out=captured)
        assert up.returncode == 0, up.stdout + up.stderr
        yield env, captured
    finally:
        _cli(env, "stack", "down", out=captured)


def test_clients_authenticate_with_the_configured_credentials(secured) -> None:
    env, _ = secured
    settings = settings_for(env)
    assert settings.kafka.security_protocol == "SASL_PLAINTEXT" and settings.clickhouse.user == "driftline_rw"
    # migrations ran as the password-protected user during `stack up`
    check_clickhouse(settings)
    client = clickhouse_client(settings)
    try:
        tables = {r[0] for r in client.execute("SHOW TABLES")}
    finally:
        client.disconnect()
    assert {"labels", "dead_letters", "schema_migrations"} <= tables
    # SCRAM: produce/consume round trip through the SASL listener, topics were created over SASL
    asyncio.run(_kafka_round_trip(settings, settings.kafka.bootstrap))

    async def topics() -> set[str]:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings))
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    assert set(settings.kafka.topics.all()) <= asyncio.run(topics())


def test_secrets_are_not_stored_in_clear_text_and_configs_are_private(secured) -> None:
    env, _ = secured
    run_dir = Path(env["DRIFTLINE_RUN_DIR"])
    users = run_dir / "clickhouse" / "users.xml"
    assert CH_SECRET.encode() not in users.read_bytes() and b"password_sha256_hex" in users.read_bytes()
    for path in (users, run_dir / "kafka" / "server.properties"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_wrong_clickhouse_password_is_a_clear_error(secured) -> None:
    env, _ = secured
    wrong = settings_for({**env, "DRIFTLINE_CLICKHOUSE__PASSWORD": "not-the-password"})
    with pytest.raises(ClickHouseAuthError) as info:
        check_clickhouse(wrong)
    message = str(info.value)
    assert "authentication failed for user 'driftline_rw'" in message
    assert "DRIFTLINE_CLICKHOUSE__PASSWORD" in message and "not-the-password" not in message
    # the stack's own health check says the same instead of "unhealthy" after a long wait
    (status,) = Stack(wrong, only=["clickhouse"]).status()
    assert status.running and not status.healthy and "authentication failed" in status.detail
    # and no password at all is rejected too (the default user does not exist on this server)
    with pytest.raises(ClickHouseAuthError):
        check_clickhouse(settings_for({**env, "DRIFTLINE_CLICKHOUSE__PASSWORD": ""}))


@pytest.mark.parametrize(
    "override",
    [
        {"DRIFTLINE_KAFKA__SASL_PASSWORD": "wrong-password"},
        {"DRIFTLINE_KAFKA__SECURITY_PROTOCOL": "PLAINTEXT"},
    ],
    ids=["wrong-scram-password", "no-sasl"],
)
def test_kafka_rejects_clients_without_valid_scram_credentials(secured, override) -> None:
    env, _ = secured
    bad = settings_for({**env, **override})

    async def connect() -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**kafka_client_kwargs(bad, request_timeout_ms=5000))
        try:
            await asyncio.wait_for(producer.start(), 20)
            await asyncio.wait_for(producer.send_and_wait(bad.kafka.topics.news, b"x"), 20)
        finally:
            await producer.stop()

    from aiokafka.errors import KafkaError

    with pytest.raises((KafkaError, TimeoutError)):
        asyncio.run(connect())
    if override.get("DRIFTLINE_KAFKA__SASL_PASSWORD"):
        # the clear error: who was rejected and which env vars to check, never the password
        with pytest.raises(KafkaAuthError) as info:
            asyncio.run(check_kafka(bad))
        message = str(info.value)
        assert "authentication failed for user 'driftline'" in message
        assert "DRIFTLINE_KAFKA__SASL_PASSWORD" in message and "wrong-password" not in message
        asyncio.run(check_kafka(settings_for(env)))  # the right password passes the same check


def test_no_secret_in_any_log_or_captured_output(secured, tmp_path: Path) -> None:
    """Run the CLI and a pipeline worker with the secrets in env, then grep every log for them."""
    env, captured = secured
    status = _cli(env, "stack", "status", "-s", "kafka", "-s", "clickhouse", out=captured)
    assert status.returncode == 0, status.stdout
    _cli(env, "stack", "logs", "--tail", "200", out=captured)
    # a pipeline worker with the secrets in its environment, at debug level, for a few seconds
    worker_log = tmp_path / "worker.log"
    worker_env = {
        **env,
        "DRIFTLINE_PIPELINE__APP_ID": "rel-secret-scan",
        "DRIFTLINE_KAFKA__TOPICS__NEWS": "rel.secret.news",
    }
    proc = subprocess.Popen(
        [*CLI, "worker", "--web-port", str(free_ports(1)[0]), "--loglevel", "debug", "--client", "triton"],
        env=worker_env, cwd=REPO_ROOT, stdout=worker_log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        proc.wait(timeout=25)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert worker_log.stat().st_size > 0, "the worker wrote nothing to scan"
    files = [*log_files(Path(env["DRIFTLINE_RUN_DIR"])), captured, worker_log]
    assert len(files) >= 4, files
    for secret in (CH_SECRET, KAFKA_SECRET):
        assert files_containing(secret, files) == [], f"secret leaked into {files_containing(secret, files)}"
